"""First-run initialisation of a cloud, idempotent on every later run:

migrations to head → token keys → admin project and user (random password, 0600 file) →
default flavors → the default network, its subnet and security group →
admin-openrc.sh and clouds.yaml. Each step is safe to repeat, so an
interrupted ``nubes up`` is finished by the next one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import select

from nubes.compute.flavors import seed_default_flavors
from nubes.config import CONFIG_FILE_NAME, Settings
from nubes.domain.context import RequestContext
from nubes.domain.roles import Role
from nubes.identity import tokens
from nubes.identity.credentials import load_credential_key
from nubes.identity.passwords import Hasher
from nubes.network.defaults import ensure_default_network
from nubes.store import events
from nubes.store.db import Database
from nubes.store.migrate import upgrade
from nubes.store.models import Project, RoleAssignment, Setting, User, utcnow

PASSWORD_FILE = "admin-password"
OPENRC_FILE = "admin-openrc.sh"
CLOUDS_FILE = "clouds.yaml"


@dataclass(frozen=True)
class InitResult:
    created: bool
    admin_password: str
    openrc: Path
    clouds: Path


def write_private(path: Path, content: str) -> None:
    """Write a file readable by its owner only, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def remember(state_dir: Path, **values: str | int | None) -> None:
    """Keep values given on the command line (``nubes up --port``) in ``nubes.toml``, so a
    later ``nubes up``, ``down`` or ``status`` without them finds the same cloud."""
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / CONFIG_FILE_NAME
    lines = path.read_text().splitlines() if path.exists() else []
    first_table = next(
        (i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines)
    )
    top, tables = lines[:first_table], lines[first_table:]
    for key, value in given.items():
        rendered = f"{key} = {json.dumps(value)}"
        matches = [i for i, line in enumerate(top) if re.match(rf"\s*{key}\s*=", line)]
        if matches:
            top[matches[0]] = rendered
        else:
            top.append(rendered)
    path.write_text("\n".join(top + tables) + "\n")


def initialise(settings: Settings, db: Database | None = None) -> InitResult:
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    (state / "logs").mkdir(exist_ok=True)
    own_db = db is None
    db = db or Database(settings.effective_database_url)
    try:
        upgrade(db)
        load_credential_key(state)
        password_file = state / PASSWORD_FILE
        created = False
        with db.transaction() as session:
            tokens.ensure_keys(session)
            admin_project = session.scalar(select(Project).where(Project.is_admin_project))
            if admin_project is None:
                admin_project = Project(
                    name=settings.admin_project,
                    description="Cloud administrators",
                    is_admin_project=True,
                )
                session.add(admin_project)
                session.flush()
                created = True
            admin = session.scalar(select(User).where(User.name == settings.admin_user))
            if admin is None:
                password = secrets.token_urlsafe(18)
                write_private(password_file, password + "\n")
                admin = User(
                    name=settings.admin_user,
                    password_hash=Hasher(settings.password_hashing).hash(password),
                    default_project_id=admin_project.id,
                )
                session.add(admin)
                session.flush()
                session.add(
                    RoleAssignment(
                        user_id=admin.id, project_id=admin_project.id, role=Role.admin.name
                    )
                )
                events.record(
                    session,
                    RequestContext.system(),
                    "cloud.initialised",
                    "project",
                    admin_project.id,
                    project_id=admin_project.id,
                )
            seed_default_flavors(session)
            ensure_default_network(session, settings, admin_project.id)
            if session.get(Setting, "initialised_at") is None:
                session.add(Setting(key="initialised_at", value=utcnow().isoformat()))
        password = password_file.read_text().strip() if password_file.exists() else ""
        openrc, clouds = write_client_files(settings, password)
        return InitResult(created, password, openrc, clouds)
    finally:
        if own_db:
            db.dispose()


def write_client_files(settings: Settings, password: str) -> tuple[Path, Path]:
    """admin-openrc.sh (for `source`) and clouds.yaml (the openstack CLI's format)."""
    url = settings.effective_public_url
    openrc = settings.state_dir / OPENRC_FILE
    env = {
        "NUBES_URL": url,
        "NUBES_USERNAME": settings.admin_user,
        "NUBES_PASSWORD": password,
        "NUBES_PROJECT": settings.admin_project,
        # The OpenStack face (a later release) reads the same credentials.
        "OS_AUTH_URL": f"{url}/identity/v3",
        "OS_USERNAME": settings.admin_user,
        "OS_PASSWORD": password,
        "OS_PROJECT_NAME": settings.admin_project,
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_IDENTITY_API_VERSION": "3",
    }
    lines = [
        "# nubes admin credentials: source this file",
        *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
    ]
    write_private(openrc, "\n".join(lines) + "\n")
    clouds = settings.state_dir / CLOUDS_FILE
    document = {
        "clouds": {
            "nubes": {
                "auth": {
                    "auth_url": f"{url}/identity/v3",
                    "username": settings.admin_user,
                    "password": password,
                    "project_name": settings.admin_project,
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "identity_api_version": 3,
                "region_name": "RegionOne",
                "interface": "public",
                "nubes_url": url,
            }
        }
    }
    write_private(clouds, yaml.safe_dump(document, sort_keys=False))
    return openrc, clouds
