"""Shared fixtures: a fresh cloud per test, on SQLite by default or on PostgreSQL when
NUBES_TEST_DATABASE_URL is set (make test runs the suite on both)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, text

from nubes.api.app import create_app
from nubes.api.services import Services
from nubes.config import PasswordHashing, SchedulerSettings, Settings
from nubes.controller.bootstrap import initialise
from nubes.store.db import Database
from nubes.store.migrate import upgrade
from nubes.store.models import Base

PG_URL = os.environ.get("NUBES_TEST_DATABASE_URL", "")
# Tests hash many passwords; production cost is set in nubes.config.
FAST_HASHING = PasswordHashing(memory_kib=1024, time_cost=1, parallelism=1)


def engine_name() -> str:
    return "postgresql" if PG_URL else "sqlite"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if PG_URL:
        db = Database(PG_URL)
        with db.engine.begin() as conn:
            meta = MetaData()
            meta.reflect(conn)
            meta.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.dispose()
        return PG_URL
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'nubes.db'}"


@pytest.fixture(scope="session")
def migrated(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    upgrade(db)
    yield db
    db.dispose()


def wipe(db: Database) -> None:
    with db.engine.begin() as conn:
        tables = list(reversed(Base.metadata.sorted_tables))
        if db.dialect == "postgresql":
            names = ", ".join(t.name for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        database_url=database_url,
        password_hashing=FAST_HASHING,
        port=18770,
        # every placement reads the hosts changed since the last: tests see what they just did
        scheduler=SchedulerSettings(refresh_seconds=0),
    )


@dataclass
class Cloud:
    services: Services
    client: TestClient
    admin_password: str

    def token(self, username: str, password: str, project: str | None = None) -> str:
        body = {"username": username, "password": password}
        if project:
            body["project"] = project
        r = self.client.post("/v1/auth/tokens", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def as_(self, token: str) -> dict[str, str]:
        return {"X-Auth-Token": token}

    @property
    def admin(self) -> dict[str, str]:
        return self.as_(self.token("admin", self.admin_password))


@pytest.fixture
def cloud(settings: Settings, migrated: Database) -> Iterator[Cloud]:
    wipe(migrated)
    result = initialise(settings, migrated)
    services = Services.build(settings, migrated)
    try:
        with TestClient(create_app(services), raise_server_exceptions=False) as client:
            yield Cloud(services, client, result.admin_password)
    finally:
        services.close()
