"""Where the CLI's URL and credentials come from, and the login file ``nubes login`` writes.

Resolution, first match wins:

1. ``--token`` (global option), then ``NUBES_TOKEN``;
2. ``NUBES_USERNAME`` + ``NUBES_PASSWORD`` (+ ``NUBES_PROJECT``);
3. the login file, ``$XDG_CONFIG_HOME/nubes/session.json`` (default ``~/.config``); an expired
   one is an error, never a silent fall-through to the next source;
4. the local cloud's ``STATE_DIR/admin-openrc.sh`` (``NUBES_STATE_DIR`` or the default state
   directory): on the head node the admin needs no set-up at all.

The URL is ``--url``, else the one stored with the login file or openrc file; a token or
password from the environment goes to ``NUBES_URL`` (else the stored URL). A stored secret is
thus never sent to a URL that only the environment named. This module reads and writes local
files only; it never talks to the controller.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nubes.cli.errors import CliError
from nubes.config import default_state_dir

OPENRC_FILE = "admin-openrc.sh"
NO_CREDENTIALS = (
    "no credentials: run `nubes login URL`, set NUBES_URL/NUBES_USERNAME/NUBES_PASSWORD/"
    "NUBES_PROJECT, or run on the head node (nubes up)"
)


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the command (``nubes --url U --token T user list``)."""

    url: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class Credentials:
    url: str
    source: str  # said in error messages: where these credentials came from
    token: str | None = None
    username: str | None = None
    password: str | None = None
    project: str | None = None
    relogin_hint: str = ""  # what to do when the token is refused


@dataclass(frozen=True)
class Session:
    """The login file's content."""

    url: str
    token: str
    expires_at: datetime
    user: str
    project: str
    path: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "token": self.token,
            "expires_at": self.expires_at.isoformat(),
            "user": self.user,
            "project": self.project,
        }


def session_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "nubes" / "session.json"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env["NUBES_STATE_DIR"]) if env.get("NUBES_STATE_DIR") else default_state_dir()


def parse_timestamp(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def load_session(env: Mapping[str, str] | None = None) -> Session | None:
    path = session_path(env)
    try:
        data = json.loads(path.read_text())
        return Session(
            url=str(data["url"]),
            token=str(data["token"]),
            expires_at=parse_timestamp(str(data["expires_at"])),
            user=str(data.get("user", "")),
            project=str(data.get("project", "")),
            path=path,
        )
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read the login file {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path} is not a valid login file: run `nubes login`") from exc


def save_session(session: Session) -> Path:
    """Write the login file readable by its owner only (the token is a bearer secret)."""
    path = session.path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(session.as_json(), handle, indent=2)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def remove_session(env: Mapping[str, str] | None = None) -> bool:
    path = session_path(env)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def read_openrc(path: Path) -> dict[str, str]:
    """The ``export KEY=value`` lines of an openrc file, values shell-unquoted."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            values[key] = value
    return values


def _local_admin(env: Mapping[str, str]) -> dict[str, str] | None:
    path = state_dir(env) / OPENRC_FILE
    try:
        values = read_openrc(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(
            f"cannot read {path} ({exc.strerror}): run as its owner, or use `nubes login`"
        ) from exc
    return values if values.get("NUBES_URL") and values.get("NUBES_USERNAME") else None


def _expired(session: Session) -> CliError:
    when = session.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return CliError(f"your login expired at {when}; run nubes login")


def resolve(options: GlobalOptions, env: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if env is None else env
    url = options.url or env.get("NUBES_URL") or None

    token, token_source = options.token, "--token"
    if not token and env.get("NUBES_TOKEN"):
        token, token_source = env["NUBES_TOKEN"], "NUBES_TOKEN"
    if token:
        fallback = _fallback_url(env)
        if not (url or fallback):
            raise CliError(f"{token_source} is set but no URL: give --url or set NUBES_URL")
        return Credentials(url=url or fallback or "", source=token_source, token=token)

    username, password = env.get("NUBES_USERNAME"), env.get("NUBES_PASSWORD")
    if username or password:
        if not (username and password):
            missing = "NUBES_PASSWORD" if username else "NUBES_USERNAME"
            raise CliError(f"{missing} is not set (NUBES_USERNAME and NUBES_PASSWORD go together)")
        fallback = _fallback_url(env)
        if not (url or fallback):
            raise CliError("NUBES_USERNAME is set but NUBES_URL is not")
        return Credentials(
            url=url or fallback or "",
            source="NUBES_USERNAME/NUBES_PASSWORD",
            username=username,
            password=password,
            project=env.get("NUBES_PROJECT") or None,
        )

    session = load_session(env)
    if session is not None:
        if session.expires_at <= datetime.now(UTC):
            raise _expired(session)
        return Credentials(
            url=options.url or session.url,
            source=f"the login file {session.path}",
            token=session.token,
            relogin_hint="run nubes login",
        )

    admin = _local_admin(env)
    if admin is not None:
        return Credentials(
            url=options.url or admin["NUBES_URL"],
            source=str(state_dir(env) / OPENRC_FILE),
            username=admin["NUBES_USERNAME"],
            password=admin.get("NUBES_PASSWORD", ""),
            project=admin.get("NUBES_PROJECT") or None,
        )
    raise CliError(NO_CREDENTIALS)


def _fallback_url(env: Mapping[str, str]) -> str | None:
    """A URL for credentials that carry none: the login file's, else the local cloud's."""
    try:
        session = load_session(env)
    except CliError:
        session = None
    if session is not None:
        return session.url
    try:
        admin = _local_admin(env)
    except CliError:
        return None
    return admin["NUBES_URL"] if admin else None
