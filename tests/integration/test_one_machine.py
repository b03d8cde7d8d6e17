"""The README's first command, for real: `nubes up --detach` brings up a controller, a local
agent, the tiny image and a demo instance whose console shows the boot marker; then the
instance goes through stop → start → reboot → delete with a real driver (QEMU under TCG here,
and LXC), and afterwards nothing of it is left: no process, no file, no mount."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.cloudproc import (
    free_port,
    network_leftovers,
    remove_network_leftovers,
    sweep_agent_run_dir,
)

pytestmark = pytest.mark.integration
NUBES = str(Path(sys.executable).parent / "nubes")
CONFIG = """listen_host = "127.0.0.1"
[password_hashing]
memory_kib = 1024
time_cost = 1
parallelism = 1
"""


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


class OneMachine:
    def __init__(self, state: Path, port: int) -> None:
        self.state, self.port = state, port
        self.env = {**os.environ, "NUBES_STATE_DIR": str(state)}
        for var in (
            "NUBES_URL",
            "NUBES_USERNAME",
            "NUBES_PASSWORD",
            "NUBES_PROJECT",
            "NUBES_TOKEN",
        ):
            self.env.pop(var, None)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self._token = ""

    def nubes(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NUBES, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def headers(self) -> dict[str, str]:
        if not self._token:
            password = (self.state / "admin-password").read_text().strip()
            r = self.http.post("/v1/auth/tokens", json={"username": "admin", "password": password})
            self._token = r.json()["token"]
        return {"X-Auth-Token": self._token}

    def server(self, ref: str) -> dict[str, Any] | None:
        r = self.http.get(f"/v1/servers/{ref}", headers=self.headers)
        return None if r.status_code == 404 else dict(r.json())

    def wait_for(self, ref: str, state: str, timeout: float = 120) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        server = None
        while time.monotonic() < deadline:
            server = self.server(ref)
            if (server is None and state == "deleted") or (
                server is not None and server["state"] == state and server["task"] is None
            ):
                return server
            assert server is None or server["state"] != "error", server
            time.sleep(0.25)
        raise AssertionError(f"{ref} not {state} after {timeout} s: {server}")

    def console(self, ref: str) -> str:
        return str(self.http.get(f"/v1/servers/{ref}/console", headers=self.headers).json()["log"])

    def action(self, ref: str, action: str) -> None:
        r = self.http.post(
            f"/v1/servers/{ref}/action", json={"action": action}, headers=self.headers
        )
        assert r.status_code == 202, r.text


@pytest.fixture(params=["qemu", "lxc"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OneMachine]:
    driver = request.param
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from nubes.agent.hypervisors.loader import load_all; import sys; "
            f"d = load_all().get({driver!r}); print(d.probe() if d else 'driver not installed')",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if probe != "None":
        pytest.skip(f"{driver} cannot run on this host: {probe}")
    state = tmp_path / "state"
    state.mkdir()
    (state / "nubes.toml").write_text(CONFIG)
    cloud = OneMachine(state, free_port())
    try:
        up = cloud.nubes(
            "up",
            "--detach",
            "--state-dir",
            str(state),
            "--port",
            str(cloud.port),
            "--driver",
            driver,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        cloud.up_output = up.stdout + up.stderr  # type: ignore[attr-defined]
        yield cloud
    finally:
        networks: list[str] = []
        with contextlib.suppress(httpx.HTTPError, KeyError, OSError):
            listed = cloud.http.get("/v1/networks", headers=cloud.headers).json()
            networks = [n["id"] for n in listed["networks"]]
        for server in (
            cloud.http.get("/v1/servers", headers=cloud.headers).json().get("servers", [])
        ):
            cloud.http.delete(f"/v1/servers/{server['id']}", headers=cloud.headers)
            with contextlib.suppress(AssertionError):
                cloud.wait_for(server["id"], "deleted", 60)
        wait_until_network_is_gone(cloud, networks)
        cloud.nubes("down", "--state-dir", str(state))
        for pid in _processes_mentioning(str(state)):
            os.kill(pid, signal.SIGKILL)  # only processes of this test's own state dir
        sweep_agent_run_dir(state / "agent")
        remove_network_leftovers(networks)
        cloud.http.close()


def wait_until_network_is_gone(cloud: OneMachine, networks: list[str]) -> list[str]:
    """Once its last instance is gone, the agent removes the host's networking (bridge,
    VXLAN, the DHCP namespace with dnsmasq and the metadata proxy); what is left after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        left = network_leftovers(networks)
        left += [str(p) for p in _processes_mentioning(str(cloud.state / "agent" / "network"))]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


def test_up_boots_a_demo_instance_and_its_lifecycle_leaves_nothing(machine: OneMachine) -> None:
    assert "NUBES-TINY-BOOTED" in machine.up_output  # type: ignore[attr-defined]
    demo = machine.server("demo")
    assert demo is not None
    assert demo["state"] == "running"
    sid = demo["id"]
    assert machine.console(sid).count("NUBES-TINY-BOOTED") == 1
    assert _processes_mentioning(sid), "a guest process (or container monitor) should exist"
    demo_nics = _nics_of(machine, sid)

    machine.action(sid, "stop")
    machine.wait_for(sid, "stopped")
    machine.action(sid, "start")
    machine.wait_for(sid, "running")
    deadline = time.monotonic() + 120
    while machine.console(sid).count("NUBES-TINY-BOOTED") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert machine.console(sid).count("NUBES-TINY-BOOTED") >= 2
    machine.action(sid, "reboot_hard")
    machine.wait_for(sid, "running")

    r = machine.http.delete(f"/v1/servers/{sid}", headers=machine.headers)
    assert r.status_code == 202
    machine.wait_for(sid, "deleted")
    assert _processes_mentioning(sid) == []
    leftovers = [p for p in (machine.state / "agent").rglob("*") if sid in str(p)]
    assert leftovers == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert sid not in mounts
    # its NIC was the host's last port on the default network: that networking goes too
    networks = [
        n["id"]
        for n in machine.http.get("/v1/networks", headers=machine.headers).json()["networks"]
    ]
    assert demo_nics  # it had one
    assert wait_until_network_is_gone(machine, networks) == []
    status = machine.nubes("status")
    assert status.returncode == 0, status.stdout + status.stderr


def _nics_of(machine: OneMachine, server_id: str) -> list[dict[str, Any]]:
    r = machine.http.get("/v1/ports", params={"device_id": server_id}, headers=machine.headers)
    return [p for p in r.json().get("ports", []) if p.get("device_id") == server_id]
