"""Probes on real processes: a controller and two fake-driver agents, each host a network
namespace. An operator probe put in the controller's probes/fake, `nubes host sync`, and both
hosts report it; a probe that hangs is killed at its time limit and shows as a probe error
while every other metric keeps flowing."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nubes.subp import subp
from tests.integration.netns import TestHosts, missing_feature

pytestmark = pytest.mark.integration

CONFIG = """listen_host = "0.0.0.0"
[password_hashing]
memory_kib = 1024
time_cost = 1
parallelism = 1
"""
MY_RVMS = """#!/bin/sh
n=$(grep -l '"power": "running"' "$NUBES_DRIVER_DIR"/fake-instances/*.json 2>/dev/null | wc -l)
echo "MY_RVMS=$n"
"""
HANGS = "#!/bin/sh\necho NEVER=1\nexec sleep 30\n"


class ProbeHosts(TestHosts):
    """TestHosts under this test's own name prefix (``npr``), apart from the other tests'."""

    __test__ = False

    def _build(self) -> None:
        self.prefix = f"npr{secrets.token_hex(2)}"
        self.ctl = f"{self.prefix}-ctl"
        self.hosts = [f"{self.prefix}-h{i + 1}" for i in range(len(self.hosts))]
        super()._build()


class Cloud:
    """The processes of this test, all ended by their PID in ``close``."""

    def __init__(self, hosts: TestHosts, root: Path) -> None:
        self.hosts = hosts
        self.root = root
        self.state = root / "state"
        self.state.mkdir()
        (self.state / "nubes.toml").write_text(CONFIG)
        self.url = f"http://{hosts.address(hosts.ctl)}:8770"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.password = ""

    def spawn(self, ns: str, name: str, argv: list[str]) -> None:
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    self.hosts.exec_argv(ns, [sys.executable, *argv]),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )

    def python(self, code: str) -> Any:
        """Run ``code`` with an admin client ``c`` (headers ``h``) inside the controller's
        namespace, the only place the controller can be reached; its last line printed, as
        JSON."""
        client = (
            "import httpx, json, time\n"
            f"c = httpx.Client(base_url={self.url!r}, timeout=10)\n"
            "for _ in range(150):\n"
            "    try:\n"
            "        c.get('/healthz'); break\n"
            "    except httpx.HTTPError: time.sleep(0.2)\n"
            "t = c.post('/v1/auth/tokens', json={'username': 'admin', "
            f"'password': {self.password!r}}}).json()['token']\n"
            "h = {'X-Auth-Token': t}\n"
        )
        argv = self.hosts.exec_argv(self.hosts.ctl, [sys.executable, "-c", client + code])
        return json.loads(subp(argv, timeout=120).stdout.strip().splitlines()[-1])

    def nubes(self, *args: str) -> Any:
        """The `nubes` CLI as the cloud admin, inside the controller's namespace."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NUBES_URL": self.url,
            "NUBES_USERNAME": "admin",
            "NUBES_PASSWORD": self.password,
            "NUBES_PROJECT": "admin",
            "XDG_CONFIG_HOME": str(self.root / "cli-config"),
        }
        cli = str(Path(sys.executable).with_name("nubes"))
        argv = self.hosts.exec_argv(self.hosts.ctl, [cli, *args, "-f", "json"])
        return json.loads(subp(argv, env=env, timeout=60).stdout)

    def wait_hosts(self, condition: str, timeout: float, what: str) -> list[dict[str, Any]]:
        """Poll the host list until ``condition`` (Python, over ``hs``) holds."""
        code = (
            f"deadline = time.monotonic() + {timeout}\n"
            "while True:\n"
            "    hs = c.get('/v1/hosts', headers=h).json()['hosts']\n"
            f"    if ({condition}) or time.monotonic() > deadline: break\n"
            "    time.sleep(0.3)\n"
            f"print(json.dumps({{'ok': bool({condition}), 'hosts': hs}}))\n"
        )
        got = self.python(code)
        assert got["ok"], f"timed out after {timeout} s waiting for {what}: {got['hosts']}"
        return list(got["hosts"])

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()  # our own processes, by their PID
            proc.wait(10)
        self._kill_orphaned_probes()

    def _kill_orphaned_probes(self) -> None:
        """A probe running when its agent was killed outlives it (its own session): find it by
        its working directory, inside this test's directory, and end it."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = (entry / "cwd").resolve(strict=True)
            except OSError:
                continue
            if cwd.is_relative_to(self.root):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    why = missing_feature()
    if why:
        pytest.skip(why)
    hosts = ProbeHosts(2)
    running = Cloud(hosts, tmp_path)
    try:
        running.spawn(
            hosts.ctl,
            "controller",
            ["-m", "nubes.controller.run", "--state-dir", str(running.state), "--port", "8770"],
        )
        deadline = time.monotonic() + 60
        while not (running.state / "admin-password").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        running.password = (running.state / "admin-password").read_text().strip()
        token = running.python(
            "print(json.dumps(c.post('/v1/host-tokens', json={'uses': 2}, headers=h).json()))"
        )["token"]
        for ns in hosts.hosts:
            argv = ["-m", "nubes.agent.run", "--state-dir", str(tmp_path / ns)]
            argv += ["--url", running.url, "--token", token, "--driver", "fake"]
            running.spawn(ns, ns, argv)
        running.wait_hosts(
            "len(hs) == 2 and all(x['state'] == 'monitored' for x in hs)", 30, "both hosts up"
        )
        yield running
    finally:
        running.close()
        hosts.close()


def test_synced_probes_reach_both_hosts_and_a_hanging_one_is_reported(cloud: Cloud) -> None:
    probes = cloud.state / "probes" / "fake"
    probes.mkdir(parents=True)
    (probes / "my_rvms.sh").write_text(MY_RVMS)
    (probes / "my_rvms.sh").chmod(0o755)

    synced = cloud.nubes("host", "sync")
    assert synced["probes"] == ["fake/my_rvms.sh"]
    hosts = cloud.wait_hosts(
        "len(hs) == 2 and all('MY_RVMS' in x['metrics'] for x in hs)", 20, "MY_RVMS on both"
    )
    assert [(h["metrics"]["MY_RVMS"], h["probe_errors"]) for h in hosts] == [(0, {}), (0, {})]
    assert all(h["metrics"]["HYPERVISOR"] == "fake" for h in hosts)

    (probes / "hangs.sh").write_text(HANGS)
    (probes / "hangs.sh").chmod(0o755)
    assert cloud.nubes("host", "sync")["probes"] == ["fake/hangs.sh", "fake/my_rvms.sh"]
    hosts = cloud.wait_hosts(
        "len(hs) == 2 and all('fake/hangs.sh' in x['probe_errors'] for x in hs)",
        30,
        "the hanging probe's error on both",
    )
    for host in hosts:
        assert host["probe_errors"] == {"fake/hangs.sh": "timed out after 5 s"}
        assert "NEVER" not in host["metrics"]  # a probe that timed out gives nothing
        assert host["metrics"]["MY_RVMS"] == 0  # the others keep flowing
    first = {h["name"]: h["metrics_at"] for h in hosts}

    # and keep being written: a later record, still with the probe's metric and the error
    later = cloud.wait_hosts(
        f"all(x['metrics_at'] > {first!r}[x['name']] for x in hs)", 30, "newer metrics"
    )
    for host in later:
        assert host["state"] == "monitored"
        assert "MY_RVMS" in host["metrics"]
        assert "LOAD1" in host["metrics"]
        assert list(host["probe_errors"]) == ["fake/hangs.sh"]


def test_a_synced_probe_in_requirements_changes_where_instances_land(cloud: Cloud) -> None:
    """The issue's demonstration: MY_RVMS (running guests, by an operator probe) pushed with
    `nubes host sync`; once node-1 runs a guest, `MY_RVMS < 1` sends new instances to node-2
    and `MY_RVMS > 0` to node-1."""
    probes = cloud.state / "probes" / "fake"
    probes.mkdir(parents=True)
    (probes / "my_rvms.sh").write_text(MY_RVMS)
    (probes / "my_rvms.sh").chmod(0o755)
    cloud.nubes("host", "sync")
    cloud.wait_hosts("all(x['metrics'].get('MY_RVMS') == 0 for x in hs)", 20, "MY_RVMS = 0")
    image = cloud.state / "tiny.img"
    image.write_bytes(b"a pretend disk image " * 64)
    cloud.nubes("image", "create", "tiny", "--file", str(image), "--disk-format", "raw")

    def create(name: str, requirements: str) -> list[str]:
        """Create, wait until running, and say on which hosts (their names)."""
        servers = cloud.nubes(
            "server", "create", name, "--image", "tiny", "--flavor", "m1.tiny",
            "--requirements", requirements, "--count", "2", "--wait", "--timeout", "60",
            "--no-network",
        )  # fmt: skip
        hosts = {h["id"]: h["name"] for h in cloud.nubes("host", "list")}
        return sorted(hosts[s["host_id"]] for s in servers)

    first = cloud.nubes(
        "server", "create", "first", "--image", "tiny", "--flavor", "m1.tiny",
        "--requirements", 'HOSTNAME = "node-1"', "--wait", "--timeout", "60", "--no-network",
    )  # fmt: skip
    assert first["state"] == "running"
    cloud.wait_hosts(
        "{x['name']: x['metrics'].get('MY_RVMS') for x in hs} == {'node-1': 1, 'node-2': 0}",
        40,
        "node-1 to report its running guest",
    )
    assert create("idle", "MY_RVMS < 1") == ["node-2", "node-2"]
    assert create("busy", "MY_RVMS > 0") == ["node-1", "node-1"]
