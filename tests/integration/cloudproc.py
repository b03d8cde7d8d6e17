"""A real controller and real agents as subprocesses on loopback, for crash tests. Every
process is ours and is ended by its PID in ``close()``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from nubes.domain import netdesired
from nubes.subp import subp

FAST_CONFIG = """listen_host = "127.0.0.1"
instance_boot_timeout_seconds = {boot_timeout}
[password_hashing]
memory_kib = 1024
time_cost = 1
parallelism = 1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CloudProcesses:
    def __init__(self, root: Path, *, boot_timeout: int = 600) -> None:
        self.root = root
        self.state = root / "state"
        self.state.mkdir(parents=True)
        (self.state / "nubes.toml").write_text(FAST_CONFIG.format(boot_timeout=boot_timeout))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self._token: str | None = None

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_controller(self) -> None:
        self._spawn(
            "controller",
            [
                "-m",
                "nubes.controller.run",
                "--state-dir",
                str(self.state),
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
            ],
        )
        self.wait(lambda: self._healthy(), 60, "controller to answer")
        self._token = None

    def _healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def start_agent(
        self, name: str, *, token: str | None = None, options: dict[str, Any] | None = None
    ) -> None:
        argv = [
            "-m",
            "nubes.agent.run",
            "--state-dir",
            str(self.root / name),
            "--url",
            self.url,
            "--driver",
            "fake",
        ]
        if token:
            argv += ["--token", token]
        if options:
            argv += ["--driver-options", json.dumps(options)]
        self._spawn(name, argv)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    @property
    def admin(self) -> dict[str, str]:
        if self._token is None:
            password = (self.state / "admin-password").read_text().strip()
            r = self.http.post("/v1/auth/tokens", json={"username": "admin", "password": password})
            r.raise_for_status()
            self._token = r.json()["token"]
        return {"X-Auth-Token": self._token}

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.http.request(method, path, headers=self.admin, **kwargs)
        assert r.status_code < 400, r.text
        return r.json() if r.content else None

    @staticmethod
    def wait(check: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def close(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.http.close()


def network_leftovers(network_ids: Iterable[str], router_ids: Iterable[str] = ()) -> list[str]:
    """What an agent in this namespace still has of these networks and routers: namespaces
    and devices named from their ids (as nubes.domain.netdesired names them)."""
    namespaces = set(subp(["ip", "netns", "list"]).stdout.split())
    devices = {
        line.split()[0].split("@")[0]
        for line in subp(["ip", "-br", "link"]).stdout.splitlines()
        if line.strip()
    }
    found = []
    for nid in network_ids:
        found += [n for n in (netdesired.netns_name("dhcp", nid),) if n in namespaces]
        names = (netdesired.bridge_name(nid), netdesired.vxlan_name(nid))
        found += [d for d in names if d in devices]
    for rid in router_ids:
        found += [n for n in (netdesired.netns_name("router", rid),) if n in namespaces]
    return found


def remove_network_leftovers(network_ids: Iterable[str], router_ids: Iterable[str] = ()) -> None:
    """The last resort of a teardown whose agent was stopped before it could clean up."""
    for name in network_leftovers(network_ids, router_ids):
        if name.startswith("nubes-"):
            subp(["ip", "netns", "del", name], check=False)
        else:
            subp(["ip", "link", "del", name], check=False)


def sweep_agent_run_dir(agent_state_dir: Path) -> list[int]:
    """End the processes an agent of ``agent_state_dir`` left in its run directory under /run
    (dnsmasq, metadata proxies: they outlive a killed agent by design) and remove it. Only
    processes whose command line names that directory; returns their PIDs."""
    import shutil

    from nubes.agent.run import network_run_dir

    run_dir = str(network_run_dir(agent_state_dir))
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if run_dir.encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    shutil.rmtree(run_dir, ignore_errors=True)
    return killed
