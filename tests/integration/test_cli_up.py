"""`nubes up --detach` for real: the installed `nubes` executable, a controller subprocess on a
free port, and a multi-tenant scenario driven only through the CLI. `nubes down` always runs,
and the controller's pid must be gone afterwards."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

NUBES = Path(sys.executable).parent / "nubes"
PASSWORD = "secret-pass-1"
FAST_CONFIG = """\
listen_host = "127.0.0.1"

[password_hashing]
memory_kib = 1024
time_cost = 1
parallelism = 1
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie nobody reaped yet is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@dataclass
class Cloud:
    state: Path
    url: str
    env: dict[str, str]  # the admin's: NUBES_STATE_DIR only, so admin-openrc.sh is used

    def run(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NUBES), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        done = self.run(*args, env=env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str, env: Mapping[str, str] | None = None) -> Any:
        return json.loads(self.ok(*args, "-f", "json", env=env))

    def as_user(self, name: str, project: str) -> dict[str, str]:
        return {
            "NUBES_URL": self.url,
            "NUBES_USERNAME": name,
            "NUBES_PASSWORD": PASSWORD,
            "NUBES_PROJECT": project,
        }


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    state = tmp_path_factory.mktemp("cloud")
    (state / "nubes.toml").write_text(FAST_CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUBES_", "OS_"))}
    env.update(NUBES_STATE_DIR=str(state), XDG_CONFIG_HOME=str(state / "client-config"))
    port = free_port()
    cloud = Cloud(state, f"http://127.0.0.1:{port}", env)
    pid: int | None = None
    try:
        started = time.monotonic()
        up = cloud.run(
            "up", "--detach", "--no-agent", "--state-dir", str(state), "--port", str(port)
        )
        assert up.returncode == 0, (up.stdout, up.stderr)
        assert time.monotonic() - started < 60
        for text in ("admin-openrc.sh", "clouds.yaml", cloud.url, "nubes status"):
            assert text in " ".join(up.stdout.split())
        pid = int((state / "controller.pid").read_text().split()[0])
        yield cloud
    finally:
        if pid is None and (state / "controller.pid").exists():
            pid = int((state / "controller.pid").read_text().split()[0])
        down = cloud.run("down", "--state-dir", str(state))
        assert down.returncode == 0, (down.stdout, down.stderr)
        if pid is not None:
            assert f"stopped controller pid {pid}" in down.stdout
            assert gone(pid)
        assert not (state / "controller.pid").exists()


@pytest.fixture(scope="module")
def tenants(cloud: Cloud) -> dict[str, Any]:
    """p1: member u1, reader r1; p2: member u2 with keypair k2 and private flavor f.p2."""
    for project in ("p1", "p2"):
        cloud.ok("project", "create", project)
    for user, project, role in (
        ("u1", "p1", "member"),
        ("u2", "p2", "member"),
        ("r1", "p1", "reader"),
    ):
        cloud.ok(
            "user", "create", user, "--password", PASSWORD, "--project", project, "--role", role
        )
    flavor = cloud.json(
        "flavor", "create", "f.p2", "--vcpus", "1", "--ram", "256", "--disk", "1",
        "--private", "--project", "p2",
    )  # fmt: skip
    keypair = cloud.json("keypair", "create", "k2", env=cloud.as_user("u2", "p2"))
    return {"flavor": flavor, "keypair": keypair}


def test_admin_files_are_private(cloud: Cloud) -> None:
    for name in ("admin-openrc.sh", "clouds.yaml"):
        path = cloud.state / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    clouds = yaml.safe_load((cloud.state / "clouds.yaml").read_text())
    assert clouds["clouds"]["nubes"]["auth"]["username"] == "admin"


def test_up_again_says_it_is_running(cloud: Cloud) -> None:
    again = cloud.ok("up", "--detach", "--no-agent", "--state-dir", str(cloud.state))
    assert "already running" in again


def test_status_is_all_well(cloud: Cloud) -> None:
    out = cloud.ok("status")
    assert "all is well" in out
    assert cloud.url in out
    report = cloud.json("status")
    assert report["ok"] is True
    assert report["remote"]["status"]["database"]["reachable"] is True


def test_a_member_cannot_see_another_projects_keypair(
    cloud: Cloud, tenants: dict[str, Any]
) -> None:
    u1 = cloud.as_user("u1", "p1")
    for command in ("show", "delete"):
        done = cloud.run("keypair", command, "k2", env=u1)
        assert done.returncode == 1, done
        assert "nubes.keypair.not_found" in done.stderr
        assert done.stderr.startswith("error: ")
    assert "k2" not in {k["name"] for k in cloud.json("keypair", "list", env=u1)}
    owner = cloud.json("keypair", "show", "k2", env=cloud.as_user("u2", "p2"))
    assert owner["fingerprint"] == tenants["keypair"]["fingerprint"]  # still there


def test_a_private_flavor_is_invisible_to_other_projects(
    cloud: Cloud, tenants: dict[str, Any]
) -> None:
    u1, u2 = cloud.as_user("u1", "p1"), cloud.as_user("u2", "p2")
    assert "f.p2" not in {f["name"] for f in cloud.json("flavor", "list", env=u1)}
    done = cloud.run("flavor", "show", "f.p2", env=u1)
    assert done.returncode == 1
    assert "nubes.flavor.not_found" in done.stderr
    assert "f.p2" in {f["name"] for f in cloud.json("flavor", "list", env=u2)}
    assert cloud.json("flavor", "show", tenants["flavor"]["id"], env=u2)["name"] == "f.p2"


def test_a_reader_may_list_but_not_create_keypairs(cloud: Cloud, tenants: dict[str, Any]) -> None:
    r1 = cloud.as_user("r1", "p1")
    assert cloud.json("keypair", "list", env=r1) == []
    done = cloud.run("keypair", "create", "kr", env=r1)
    assert done.returncode == 1
    assert "forbidden" in done.stderr
    assert "nubes.policy.forbidden" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_revoked_token_stops_working(cloud: Cloud) -> None:
    token = cloud.json("token", "issue")["token"]
    assert cloud.json("token", "show", env={"NUBES_TOKEN": token})["user"]["name"] == "admin"
    cloud.ok("token", "revoke", token)
    done = cloud.run("token", "show", env={"NUBES_TOKEN": token})
    assert done.returncode == 1
    assert "nubes.auth.unauthenticated" in done.stderr
