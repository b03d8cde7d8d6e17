"""What the store can say about itself for ``nubes status``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text

from nubes.store.db import Database
from nubes.store.migrate import current_revision, head_revision
from nubes.store.models import Flavor, Project, TokenKey, User


@dataclass(frozen=True)
class StoreReport:
    engine: str
    url: str
    revision: str | None
    head: str | None
    reachable: bool
    counts: dict[str, int]
    problems: list[str]


def report(db: Database) -> StoreReport:
    safe_url = db.engine.url.render_as_string(hide_password=True)
    problems: list[str] = []
    counts: dict[str, int] = {}
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
            for name, model in (
                ("projects", Project),
                ("users", User),
                ("flavors", Flavor),
                ("token_keys", TokenKey),
            ):
                counts[name] = session.scalar(select(func.count()).select_from(model)) or 0
        revision = current_revision(db)
    except Exception as exc:  # any failure here is the answer, not an error
        return StoreReport(
            db.dialect,
            safe_url,
            None,
            head_revision(),
            False,
            {},
            [f"the database is not reachable: {exc}"],
        )
    head = head_revision()
    if revision != head:
        problems.append(f"database schema at {revision}, code expects {head}: run `nubes up`")
    if counts.get("token_keys", 0) < 2:
        problems.append("no token keys: the cloud is not initialised")
    return StoreReport(db.dialect, safe_url, revision, head, True, counts, problems)
