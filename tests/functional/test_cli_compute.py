"""`nubes server`, `image`, `host` and `service` against the in-process API.

Servers need a host and an image: the image is uploaded through the CLI, the host joins
through the agent face, and a small thread plays its agent (reports what the desired state
asks for), so `--wait` sees servers run, stop, reboot and go away.
"""

from __future__ import annotations

import json
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import Result

from nubes.cli import server as cli_server
from tests.functional.cli_harness import Run, admin_runner, data, ok

CONSOLE = "nubes tiny guest\n\x1b[1mbooted\x1b[0m\nlogin: "


@pytest.fixture
def nubes(cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    monkeypatch.setattr(cli_server, "POLL_SECONDS", 0.02)
    return admin_runner(cloud, monkeypatch, tmp_path)


def failed(result: Result) -> str:
    """The one `error: …` line of a command that exited 1."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), lines
    assert "Traceback" not in result.output
    return lines[-1]


# a host and its agent ----------------------------------------------------------------------------


@dataclass
class Host:
    name: str
    credential: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


def join_host(cloud: Any) -> Host:
    token = cloud.client.post("/v1/host-tokens", json={}, headers=cloud.admin).json()["token"]
    joined = cloud.client.post(
        "/v1/agent/join",
        json={
            "token": token,
            "driver": "fake",
            "vcpus": 8,
            "ram_mb": 16384,
            "disk_gb": 100,
            "capabilities": {"image_kinds": ["disk", "rootfs"]},
        },
    )
    assert joined.status_code == 200, joined.text
    host = Host(joined.json()["name"], joined.json()["credential"])
    beat = cloud.client.post("/v1/agent/heartbeat", json={"metrics": {}}, headers=host.auth)
    assert beat.status_code == 200, beat.text
    return host


class FakeAgent:
    """Plays a host's agent: reports each instance with a task as the desired state asks."""

    def __init__(self, cloud: Any, host: Host) -> None:
        self.http = TestClient(cloud.client.app, raise_server_exceptions=False)
        self.host = host
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, name="fake-agent", daemon=True)

    def _report(self, instance: Mapping[str, Any]) -> dict[str, Any]:
        desired, task = instance["desired_power"], instance["task"]
        if desired == "deleted":
            return {"power": "absent"}
        if desired == "stopped":
            return {"power": "stopped"}
        report: dict[str, Any] = {"power": "running"}
        if task in ("reboot", "reboot_hard"):
            report["completed_task"] = task
        if task == "create":
            report["console_log"] = CONSOLE
        return report

    def _run(self) -> None:
        seen = -1
        while not self.stopping.is_set():
            try:
                self.http.post("/v1/agent/heartbeat", json={"metrics": {}}, headers=self.host.auth)
                got = self.http.get(
                    "/v1/agent/desired",
                    params={"seen": seen, "wait": 0.1},
                    headers=self.host.auth,
                )
                assert got.status_code == 200, got.text
                seen = got.json()["version"]
                for instance in got.json()["instances"]:
                    if instance["task"] is None:
                        continue
                    r = self.http.post(
                        f"/v1/agent/instances/{instance['id']}/report",
                        json=self._report(instance),
                        headers=self.host.auth,
                    )
                    assert r.status_code == 200, r.text
            except Exception as exc:  # surfaced by the fixture, not lost in the thread
                self.failures.append(repr(exc))
                return

    def __enter__(self) -> FakeAgent:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        assert not self.failures, self.failures


@pytest.fixture
def host(cloud: Any) -> Host:
    return join_host(cloud)


@pytest.fixture
def agent(cloud: Any, host: Host) -> Iterator[FakeAgent]:
    with FakeAgent(cloud, host) as playing:
        yield playing


@pytest.fixture
def image(nubes: Run, tmp_path: Path) -> dict[str, Any]:
    disk = tmp_path / "tiny.qcow2"
    disk.write_bytes(b"not really qcow2 " * 64)
    return dict(data(nubes("image", "create", "tiny", "--file", str(disk), "-f", "json")))


def create(nubes: Run, name: str, *extra: str) -> Result:
    return nubes(
        "server", "create", name, "--image", "tiny", "--flavor", "m1.tiny", *extra, "-f", "json"
    )


# servers -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("image", "agent")
def test_server_lifecycle_with_wait(nubes: Run, host: Host) -> None:
    made = data(create(nubes, "web", "--wait", "--property", "role=web"))
    assert made["state"] == "running"
    assert made["task"] is None
    assert made["metadata"] == {"role": "web"}

    listed = data(nubes("server", "list", "-f", "json"))
    assert [(s["name"], s["state"]) for s in listed] == [("web", "running")]
    table = ok(nubes("server", "list")).stdout
    assert "Host" in table
    assert host.name in table  # cloud admins see where it runs, by name
    assert "m1.tiny" in table
    assert "tiny" in table
    shown = ok(nubes("server", "show", "web")).stdout
    assert "role=web" in shown
    assert data(nubes("server", "show", made["id"], "-f", "json"))["name"] == "web"

    console = ok(nubes("server", "console", "web")).stdout
    assert "booted" in console
    assert "\x1b" not in console  # the guest's escape sequences never reach the terminal
    assert ok(nubes("server", "console", "web", "--lines", "1")).stdout == "login: \n"

    assert "server web is stopped" in ok(nubes("server", "stop", "web", "--wait")).stdout
    assert data(nubes("server", "show", "web", "-f", "json"))["state"] == "stopped"
    assert data(nubes("server", "start", "web", "--wait", "-f", "json"))["state"] == "running"
    rebooted = data(nubes("server", "reboot", "web", "--wait", "-f", "json"))
    assert (rebooted["state"], rebooted["task"]) == ("running", None)
    assert "is running" in ok(nubes("server", "reboot", "--hard", "web", "--wait")).stdout

    deleted = ok(nubes("server", "delete", "web", "--wait"))
    assert "deleted server web" in deleted.stdout
    assert data(nubes("server", "list", "-f", "json")) == []
    assert failed(nubes("server", "show", "web")).startswith("error: no instance 'web'")


@pytest.mark.usefixtures("image", "host")
def test_create_without_wait_prints_the_servers_and_wait_gives_up(
    nubes: Run, tmp_path: Path
) -> None:
    # No agent runs: the servers stay scheduled.
    several = data(create(nubes, "batch", "--count", "2"))
    assert [s["name"] for s in several] == ["batch-1", "batch-2"]
    assert {s["state"] for s in several} == {"scheduled"}
    one = ok(nubes("server", "create", "solo", "--image", "tiny", "--flavor", "m1.tiny"))
    assert "solo" in one.stdout
    assert "scheduled" in one.stdout

    ok(nubes("keypair", "create", "k1", "--private-key-file", str(tmp_path / "k1")))
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\n")
    keyed = data(create(nubes, "keyed", "--key-name", "k1", "--user-data", str(user_data)))
    assert keyed["keypair_name"] == "k1"
    missing = failed(create(nubes, "x", "--user-data", str(tmp_path / "nope")))
    assert "cannot read the user data" in missing

    line = failed(create(nubes, "stuck", "--wait", "--timeout", "1"))
    assert "gave up after 1 s waiting for running: stuck is still scheduled (task create)" in line


@pytest.mark.usefixtures("image", "host")
def test_unplaceable_server_ends_in_error_with_the_reason(nubes: Run) -> None:
    ok(nubes("flavor", "create", "huge", "--vcpus", "1", "--ram", str(10**6), "--disk", "1"))
    ok(nubes("quota", "set", "admin", "--ram", "-1"))
    result = nubes(
        "server", "create", "big", "--image", "tiny", "--flavor", "huge", "--wait", "-f", "json"
    )
    line = failed(result)
    assert "server big went to error: 0 of 1 hosts fit: 1 not enough RAM" in line
    assert json.loads(result.stdout)["state"] == "error"  # the server is printed as well
    assert "big: error" in result.stderr  # the progress, line by line off a terminal


@pytest.mark.usefixtures("image")
def test_hosts_and_services(nubes: Run, host: Host) -> None:
    hosts = data(nubes("host", "list", "-f", "json"))
    assert [(h["name"], h["state"], h["enabled"]) for h in hosts] == [
        (host.name, "monitored", True)
    ]
    table = ok(nubes("host", "list")).stdout
    assert "0/8" in table  # vCPUs used/total
    assert "0/16384" in table
    assert "s ago" in table
    assert data(nubes("host", "show", host.name, "-f", "json"))["driver"] == "fake"

    services = ok(nubes("service", "list")).stdout
    assert "agent" in services
    assert ":-) up" in services
    agents = [s for s in data(nubes("service", "list", "-f", "json")) if s["name"] == "agent"]
    assert [(s["host"], s["state"]) for s in agents] == [(host.name, "up")]

    said = ok(nubes("host", "disable", host.name, "--reason", "new disks")).stdout
    assert f"disabled host {host.name} (new disks)" in said
    agents = [s for s in data(nubes("service", "list", "-f", "json")) if s["name"] == "agent"]
    assert agents[0]["detail"] == "disabled new disks"
    line = failed(create(nubes, "nowhere", "--wait"))
    assert "0 of 1 hosts fit: 1 disabled" in line

    enabled = data(nubes("host", "enable", host.name, "-f", "json"))
    assert (enabled["enabled"], enabled["disabled_reason"]) == (True, "")
    assert "deleting server nowhere" in ok(nubes("server", "delete", "nowhere", "--wait")).stdout
    assert f"deleted host {host.name}" in ok(nubes("host", "delete", host.name)).stdout
    assert data(nubes("host", "list", "-f", "json")) == []


def test_host_token_create_prints_the_join_command(nubes: Run) -> None:
    result = ok(nubes("host", "token", "create", "--uses", "3", "--expires", "30m"))
    assert "nubes agent join http://nubes.test --token join." in result.stdout
    assert "shown once" in result.stderr
    made = data(nubes("host", "token", "create", "--expires", "2d", "-f", "json"))
    assert made["uses"] == 1
    assert made["token"].startswith("join.")
    assert nubes("host", "token", "create", "--expires", "soon").exit_code == 2
    assert "nubes.request.invalid" in failed(nubes("host", "token", "create", "--expires", "5"))


# images ------------------------------------------------------------------------------------------


def test_image_create_list_show_delete(nubes: Run, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * (3 << 19))  # 1.5 MiB: more than the API's general body limit
    rootfs = tmp_path / "rootfs.tar.gz"
    rootfs.write_bytes(b"tarball")
    made = data(
        nubes(
            "image", "create", "both", "--file", str(disk), "--rootfs", str(rootfs),
            "--disk-format", "raw", "--property", "os=tiny", "-f", "json",
        )
    )  # fmt: skip
    assert made["status"] == "active"
    assert (made["disk_format"], made["disk_size"], made["rootfs_size"]) == ("raw", 3 << 19, 7)
    assert made["properties"] == {"os": "tiny"}
    assert made["visibility"] == "private"

    only_rootfs = data(nubes("image", "create", "ct", "--rootfs", str(rootfs), "-f", "json"))
    assert (only_rootfs["disk_checksum"], only_rootfs["rootfs_size"]) == (None, 7)

    assert {i["name"] for i in data(nubes("image", "list", "-f", "json"))} == {"both", "ct"}
    table = ok(nubes("image", "list")).stdout
    assert "1.5 MiB" in table
    assert "active" in table
    assert "os=tiny" in ok(nubes("image", "show", "both")).stdout
    assert data(nubes("image", "show", made["id"], "-f", "json"))["name"] == "both"

    assert "deleted image both" in ok(nubes("image", "delete", "both", "ct")).stdout
    assert data(nubes("image", "list", "-f", "json")) == []


def test_image_create_refuses_bad_files(nubes: Run, tmp_path: Path) -> None:
    assert nubes("image", "create", "none").exit_code == 2  # neither --file nor --rootfs
    missing = failed(nubes("image", "create", "x", "--file", str(tmp_path / "nope")))
    assert "no such file" in missing
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert "nubes.image.invalid" in failed(nubes("image", "create", "x", "--file", str(empty)))
    # The half-made image was deleted again.
    assert data(nubes("image", "list", "-f", "json")) == []


def test_image_build_tiny_registers_one_image(
    nubes: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built_in: list[Path] = []

    @dataclass(frozen=True)
    class Built:
        disk: Path
        rootfs: Path

    def build_tiny(
        out_dir: Path, *, cache_dir: Path, progress: Callable[[str], None] | None = None
    ) -> Built:
        assert progress is not None
        progress("building disk image")
        built_in.append(out_dir)
        (out_dir / "tiny.qcow2").write_bytes(b"qcow2")
        (out_dir / "tiny.tar.gz").write_bytes(b"tar.gz")
        return Built(out_dir / "tiny.qcow2", out_dir / "tiny.tar.gz")

    fake = types.ModuleType("nubes.images.tiny")
    fake.build_tiny = build_tiny  # type: ignore[attr-defined]
    fake.default_cache_dir = lambda: tmp_path / "cache"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nubes.images.tiny", fake)

    result = ok(nubes("image", "build", "tiny", "--public", "-f", "json"))
    assert "building disk image" in result.stderr
    image = json.loads(result.stdout)
    assert (image["name"], image["visibility"], image["disk_format"]) == ("tiny", "public", "qcow2")
    assert (image["disk_size"], image["rootfs_size"]) == (5, 6)
    assert not built_in[0].exists()  # the build directory is removed

    monkeypatch.setitem(sys.modules, "nubes.images.tiny", None)
    assert "the tiny image builder is not available" in failed(nubes("image", "build", "tiny"))
