"""Types every native schema shares: names, pagination parameters, list envelopes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from nubes.domain.names import NAME_MAX, NAME_RE, NAME_RULE
from nubes.store.query import MAX_LIMIT


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"invalid name {value[:80]!r}: {NAME_RULE}")
    return value


Name = Annotated[
    str,
    Field(min_length=1, max_length=NAME_MAX, description=NAME_RULE),
    AfterValidator(_check_name),
]
Description = Annotated[str, Field(max_length=1024)]

Limit = Annotated[
    int | None, Query(ge=1, le=1000, description="At most this many items (default 1000).")
]
Marker = Annotated[
    str | None,
    Query(max_length=255, description="The id (or name) of the last item of the previous page."),
]
NameFilter = Annotated[str | None, Query(max_length=255, description="Only items with this name.")]


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Ref(BaseModel):
    id: str
    name: str


def next_marker(items: Sequence[object], limit: int | None, key: str = "id") -> str | None:
    """The marker for the next page, when this page is full (``paginate`` caps every page at
    MAX_LIMIT, so a list without ``limit`` is paged too)."""
    page = min(limit or MAX_LIMIT, MAX_LIMIT)
    if len(items) < page:
        return None
    return str(getattr(items[-1], key))


def status_of(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


Timestamp = datetime
