"""Two compute hosts, each a network namespace with its own address, join a controller in a
third namespace by token; instances land on both."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netns import TestHosts, missing_feature

pytestmark = pytest.mark.integration

CONFIG = """listen_host = "0.0.0.0"
[password_hashing]
memory_kib = 1024
time_cost = 1
parallelism = 1
"""


@pytest.fixture
def hosts() -> Iterator[TestHosts]:
    why = missing_feature()
    if why:
        pytest.skip(why)
    made = TestHosts(2)
    try:
        yield made
    finally:
        made.close()


def test_agents_on_two_test_hosts_join_and_take_instances(hosts: TestHosts, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "nubes.toml").write_text(CONFIG)
    url = f"http://{hosts.address(hosts.ctl)}:8770"
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(ns: str, name: str, argv: list[str]) -> None:
        with open(tmp_path / f"{name}.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    hosts.exec_argv(ns, [sys.executable, *argv]),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )

    try:
        spawn(
            hosts.ctl,
            "controller",
            ["-m", "nubes.controller.run", "--state-dir", str(state), "--port", "8770"],
        )

        # The controller is reachable only inside the test network: each check runs a small
        # Python client in the controller's namespace.
        def api(code: str) -> str:
            out = subprocess.run(
                hosts.exec_argv(hosts.ctl, [sys.executable, "-c", code]),
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            return out.stdout.strip()

        password = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not password:
            if (state / "admin-password").exists():
                password = (state / "admin-password").read_text().strip()
            time.sleep(0.2)
        client = (
            "import httpx, json, sys, time\n"
            f"c = httpx.Client(base_url={url!r}, timeout=10)\n"
            "for _ in range(100):\n"
            "    try:\n"
            "        c.get('/healthz'); break\n"
            "    except httpx.HTTPError: time.sleep(0.2)\n"
            f"t = c.post('/v1/auth/tokens', json={{'username': 'admin', 'password': {password!r}}}).json()['token']\n"
            "h = {'X-Auth-Token': t}\n"
        )
        tokens = api(
            client + "print(c.post('/v1/host-tokens', json={'uses': 2}, headers=h).json()['token'])"
        )
        for ns in hosts.hosts:
            spawn(
                ns,
                ns,
                [
                    "-m",
                    "nubes.agent.run",
                    "--state-dir",
                    str(tmp_path / ns),
                    "--url",
                    url,
                    "--token",
                    tokens,
                    "--driver",
                    "fake",
                ],
            )
        listing = api(
            client
            + (
                "for _ in range(150):\n"
                "    hs = c.get('/v1/hosts', headers=h).json()['hosts']\n"
                "    if len(hs) == 2 and all(x['state'] == 'monitored' for x in hs): break\n"
                "    time.sleep(0.2)\n"
                "print(json.dumps(sorted((x['name'], x['address']) for x in hs)))\n"
            )
        )
        joined = json.loads(listing)
        assert [name for name, _ in joined] == ["node-1", "node-2"]
        # each host registered with its own address in the test network
        assert sorted(addr for _, addr in joined) == sorted(hosts.address(h) for h in hosts.hosts)
        placed = api(
            client
            + (
                "img = c.post('/v1/images', json={'name': 'tiny', 'visibility': 'public'}, headers=h).json()\n"
                "c.put(f\"/v1/images/{img['id']}/file\", content=b'x' * 100, headers=h)\n"
                "ids = []\n"
                "for host, other in (('node-1', 'node-2'), ('node-2', 'node-1')):\n"
                "    c.patch(f'/v1/hosts/{other}', json={'enabled': False}, headers=h)\n"
                "    c.patch(f'/v1/hosts/{host}', json={'enabled': True}, headers=h)\n"
                "    s = c.post('/v1/servers', json={'name': f'on-{host}', 'image': 'tiny', 'flavor': 'm1.tiny', 'networks': 'none'}, headers=h).json()['servers'][0]\n"
                "    ids.append(s['id'])\n"
                "for _ in range(150):\n"
                "    ss = [c.get(f'/v1/servers/{i}', headers=h).json() for i in ids]\n"
                "    if all(s['state'] == 'running' for s in ss): break\n"
                "    time.sleep(0.2)\n"
                "names = {x['id']: x['name'] for x in c.get('/v1/hosts', headers=h).json()['hosts']}\n"
                "print(json.dumps(sorted((s['name'], s['state'], names[s['host_id']]) for s in ss)))\n"
            )
        )
        assert placed == (
            '[["on-node-1", "running", "node-1"], ["on-node-2", "running", "node-2"]]'
        ), placed
    finally:
        for proc in procs:
            proc.kill()  # our own processes, by their PID
            proc.wait(10)
