"""Rendering: rich tables for people, the API's JSON for scripts (``-f json``).

JSON goes to stdout untouched by rich (no wrapping, no colour): objects as the API returned
them, lists as JSON arrays. Every value shown in a table goes through :class:`rich.text.Text`,
so names and descriptions are never read as rich markup.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text


class Format(StrEnum):
    table = "table"
    json = "json"


FormatOption = Annotated[
    Format,
    typer.Option(
        "--format", "-f", help="table (for people) or json (for scripts).", show_default=False
    ),
]

#: (key in the API object, possibly dotted; column heading)
Column = tuple[str, str]


def console(*, stderr: bool = False) -> Console:
    # Made per call: the streams are looked up when printing (tests swap sys.stdout).
    return Console(stderr=stderr, markup=False, highlight=False, emoji=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def say(message: str, *, style: str | None = None) -> None:
    console().print(Text(message, style=style or ""), soft_wrap=True)


def note(message: str) -> None:
    """Information beside the output (stderr), so that stdout stays parseable."""
    console(stderr=True).print(Text(message), soft_wrap=True)


def warn(message: str) -> None:
    console(stderr=True).print(Text(message, style="yellow"), soft_wrap=True)


def lookup(item: Mapping[str, Any], key: str) -> Any:
    value: Any = item
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return str(value)


def render_list(items: Sequence[Mapping[str, Any]], columns: Sequence[Column], fmt: Format) -> None:
    if fmt is Format.json:
        print_json(list(items))
        return
    table = Table(show_lines=False)
    for _, heading in columns:
        table.add_column(heading, overflow="fold")  # ids must stay whole when narrow
    for item in items:
        table.add_row(*(Text(cell(lookup(item, key))) for key, _ in columns))
    console().print(table)


def render_one(
    item: Mapping[str, Any], fmt: Format, fields: Sequence[Column] | None = None
) -> None:
    if fmt is Format.json:
        print_json(item)
        return
    chosen = fields or [(key, key) for key in item]
    table = Table(show_lines=False)
    table.add_column("Field")
    table.add_column("Value", overflow="fold")
    for key, label in chosen:
        table.add_row(Text(label), Text(cell(lookup(item, key))))
    console().print(table)
