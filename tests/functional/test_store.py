"""The store: migrations equal the models, compare-and-swap, SQLite settings, bootstrap."""

from __future__ import annotations

import stat

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text, update

from nubes.controller.bootstrap import initialise
from nubes.domain.errors import GenerationConflict
from nubes.store.cas import compare_and_swap
from nubes.store.migrate import current_revision, head_revision
from nubes.store.models import Base, Flavor, Host, Project


def test_migrations_match_models(migrated):
    assert current_revision(migrated) == head_revision()
    with migrated.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_compare_and_swap_detects_a_lost_update(cloud):
    db = cloud.services.db
    with db.transaction() as s:
        flavor = s.scalar(select(Flavor).where(Flavor.name == "m1.tiny"))
        seen = flavor.generation
    with db.transaction() as s:
        assert compare_and_swap(s, Flavor, flavor.id, seen, {"description": "first"}) == seen + 1
    with pytest.raises(GenerationConflict), db.transaction() as s:
        compare_and_swap(s, Flavor, flavor.id, seen, {"description": "second"})
    with db.read() as s:
        assert s.get(Flavor, flavor.id).description == "first"


def test_engine_settings(cloud):
    """SQLite: WAL and foreign keys on. PostgreSQL: READ COMMITTED, which the guarded updates
    are written for."""
    db = cloud.services.db
    with db.read() as s:
        if db.dialect == "sqlite":
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
        else:
            assert s.execute(text("SHOW transaction_isolation")).scalar() == "read committed"


def test_bootstrap_is_idempotent_and_writes_private_files(cloud, settings):
    first = cloud.admin_password
    again = initialise(settings, cloud.services.db)
    assert again.created is False
    assert again.admin_password == first
    with cloud.services.db.read() as s:
        assert len(s.scalars(select(Project)).all()) == 1
        assert len(s.scalars(select(Flavor)).all()) == 5
    for name in ("admin-password", "admin-openrc.sh", "clouds.yaml", "credential.key"):
        mode = stat.S_IMODE((settings.state_dir / name).stat().st_mode)
        assert mode == 0o600, name
    clouds = yaml.safe_load((settings.state_dir / "clouds.yaml").read_text())
    assert clouds["clouds"]["nubes"]["auth"]["username"] == "admin"
    assert clouds["clouds"]["nubes"]["auth"]["password"] == first
    openrc = (settings.state_dir / "admin-openrc.sh").read_text()
    assert f"export NUBES_URL=http://127.0.0.1:{settings.port}" in openrc
    assert stat.S_IMODE(settings.state_dir.stat().st_mode) == 0o700


def test_remembered_port_is_read_back(tmp_path):
    from nubes.config import load_settings
    from nubes.controller.bootstrap import remember

    (tmp_path / "nubes.toml").write_text('log_level = "debug"\n[password_hashing]\ntime_cost = 3\n')
    remember(tmp_path, port=9999, listen_host="127.0.0.1")
    remember(tmp_path, port=9998)
    settings = load_settings(tmp_path)
    assert settings.port == 9998
    assert settings.listen_host == "127.0.0.1"
    assert settings.log_level == "debug"
    assert settings.password_hashing.time_cost == 3


def test_a_watch_calls_back_after_commits_that_wrote_its_tables_until_stopped(cloud):
    db, calls = cloud.services.db, []
    stop = db.watch(["flavors"], lambda: calls.append("flavors"))
    with db.transaction() as session:
        session.execute(update(Flavor).values(description="x"))
    with db.transaction() as session:  # another table
        session.execute(update(Host).values(error=""))

    def rolled_back() -> None:
        with db.transaction() as session:
            session.execute(update(Flavor).values(description="y"))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        rolled_back()
    assert calls == ["flavors"]
    stop()
    with db.transaction() as session:
        session.execute(update(Flavor).values(description="z"))
    assert calls == ["flavors"]


def test_services_closed_leave_no_watch_on_a_database_they_share(cloud):
    """Every test builds services on the suite's one database: each left its watch (and its
    session listeners) behind, so late tests ran hundreds of listeners per statement."""
    assert len(cloud.services.db._watches) == 1  # only these services'
