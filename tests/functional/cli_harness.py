"""Running `nubes ARGS` in-process against the test cloud, shared by the CLI tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from nubes.cli import client as cli_client
from nubes.cli.main import app

CREDENTIAL_VARS = (
    "NUBES_TOKEN",
    "NUBES_URL",
    "NUBES_USERNAME",
    "NUBES_PASSWORD",
    "NUBES_PROJECT",
    "NUBES_STATE_DIR",
    "XDG_CONFIG_HOME",
)

Run = Callable[..., Result]


def admin_runner(cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    """Run `nubes ARGS` as the cloud admin (env credentials) against the in-process app.

    Each command gets its own TestClient on the cloud's app: the CLI closes its client when
    the command ends, as it should, and the fixture's client must survive that.
    """
    monkeypatch.setattr(
        cli_client,
        "make_http",
        lambda base_url: TestClient(cloud.client.app, raise_server_exceptions=False),
    )
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("NUBES_STATE_DIR", str(tmp_path / "no-cloud-here"))
    monkeypatch.setenv("NUBES_URL", "http://nubes.test")
    monkeypatch.setenv("NUBES_USERNAME", "admin")
    monkeypatch.setenv("NUBES_PASSWORD", cloud.admin_password)
    monkeypatch.setenv("NUBES_PROJECT", "admin")
    runner = CliRunner()

    def run(
        *args: str, input: str | None = None, env: Mapping[str, str | None] | None = None
    ) -> Result:
        return runner.invoke(app, list(args), input=input, env=dict(env or {}))

    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def data(result: Result) -> Any:
    return json.loads(ok(result).stdout)
