"""A network lab for the data plane's real tests: "hosts" and "guests" as network namespaces.

Hosts are joined by a veth pair on a management subnet that exists only inside them; the
network agent runs *in* a host namespace as a separate process (``nsenter --net``: the host's
network, the machine's mounts, so the DHCP namespaces it makes are visible to everyone, as on a
real host). A guest is a namespace whose ``eth0`` is the port's MAC and whose peer, in the
host, is named as the port's tap, which is what LXC makes for a container. Every name starts
with the lab's tag; ``close()`` removes every namespace, process and file the lab made, and
anything the agents left, even after a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nubes.domain.netdesired import HostNetworks, Port, to_json
from nubes.subp import SubpError, SubpResult, subp, which

REPO = Path(__file__).resolve().parents[3]
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "LEASE ip=$ip router=$router mtu=$mtu serverid=$serverid"
exit 0
"""
RESPONDER = """
import socket, sys, threading
name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8)
    while True:
        c, _ = s.accept(); c.sendall(f"hello from {name}:{port}".encode()); c.close()
for p in ports:
    threading.Thread(target=serve, args=(p,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
CONNECT = """
import socket, sys
host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(); s.settimeout(float(sys.argv[4]))
if source:
    s.bind((source, 0))
try:
    s.connect((host, port)); print(s.recv(100).decode())
except OSError as exc:
    print(f"failed: {exc}"); sys.exit(1)
"""


def missing() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("dnsmasq", "dnsmasq-base"),
        ("busybox", "busybox-static"),
        ("nsenter", "util-linux"),
    ):
        if which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    probe = f"dp5p{secrets.token_hex(3)}"
    try:
        subp(["ip", "netns", "add", probe])
    except SubpError as exc:
        return f"the kernel refuses network namespaces: {exc}"
    subp(["ip", "netns", "del", probe], check=False)
    return None


@dataclass
class Host:
    ns: str
    address: str  # on the management subnet
    run_dir: Path
    prefix: str  # the agent's namespace_prefix

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"namespace_prefix": self.prefix, "local_ip": self.address, **extra}


class Lab:
    __test__ = False

    def __init__(self) -> None:
        self.tag = f"dp5{secrets.token_hex(2)}"
        self.root = Path("/tmp") / self.tag  # world-readable: dnsmasq re-reads as nobody
        self.root.mkdir(mode=0o755)
        self.root.chmod(0o755)
        self.namespaces: list[str] = []
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen[str]] = []
        self.links = 0

    # -- building ---------------------------------------------------------------------------

    def _netns(self, name: str) -> str:
        ns = f"{self.tag}-{name}"
        subp(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        subp(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def host(self, name: str, address: str) -> Host:
        made = Host(self._netns(name), address, self.root / name, f"{self.tag}{name}")
        self.hosts.append(made)
        return made

    def wire(self, a: Host, b: Host, *, addresses: bool = True) -> tuple[str, str]:
        """A point-to-point link between two hosts: the management network, or (without
        addresses) a dedicated uplink for flat and VLAN networks."""
        self.links += 1
        end_a, end_b = f"l{self.links}a", f"l{self.links}b"
        subp([
            "ip", "-n", a.ns, "link", "add", end_a, "type", "veth",
            "peer", "name", end_b, "netns", b.ns,
        ])  # fmt: skip
        for host, end in ((a, end_a), (b, end_b)):
            if addresses:
                subp(["ip", "-n", host.ns, "addr", "add", f"{host.address}/24", "dev", end])
            subp(["ip", "-n", host.ns, "link", "set", end, "up"])
        return end_a, end_b

    def guest(
        self, name: str, host: Host, port: Port, address: str | None = None, mtu: int = 1500
    ) -> str:
        """A guest on ``port``: its host end (named as the port's tap) is left off the bridge;
        the agent's next pass puts it there. ``address``: configured statically (CIDR)."""
        ns = self._netns(name)
        subp([
            "ip", "-n", host.ns, "link", "add", port.tap, "type", "veth",
            "peer", "name", "eth0", "netns", ns,
        ])  # fmt: skip
        subp(["ip", "-n", ns, "link", "set", "eth0", "address", port.mac, "mtu", str(mtu), "up"])
        if address:
            subp(["ip", "-n", ns, "addr", "add", address, "dev", "eth0"])
        return ns

    # -- the agent ----------------------------------------------------------------------------

    def agent_argv(self, host: Host, action: str, **options: Any) -> list[str]:
        return [
            "nsenter", f"--net=/run/netns/{host.ns}",
            sys.executable, "-m", "nubes.agent.network", action,
            "--run-dir", str(host.run_dir), "--options", json.dumps(host.options(**options)),
        ]  # fmt: skip

    def converge(self, host: Host, desired: HostNetworks, **options: Any) -> dict[str, Any]:
        """One pass of a fresh agent process in ``host``; its report."""
        result = subp(
            self.agent_argv(host, "converge", **options),
            input=json.dumps(to_json(desired)),
            cwd=REPO,
            ok_codes=(0, 1),
            timeout=60,
        )
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    # -- inside namespaces ------------------------------------------------------------------

    def run_in(self, ns: str, argv: list[str], **kwargs: Any) -> SubpResult:
        return subp(["ip", "netns", "exec", ns, *argv], **kwargs)

    def spawn(self, ns: str, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        self.processes.append(proc)
        return proc

    def spawn_agent(self, host: Host, code: str, *args: str) -> subprocess.Popen[str]:
        """Python ``code`` in ``host``'s network (as the agent runs), kept for close()."""
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host.ns}", sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        self.processes.append(proc)
        return proc

    def responder(self, ns: str, name: str, *ports: int) -> None:
        proc = self.spawn(ns, [sys.executable, "-c", RESPONDER, name, *map(str, ports)])
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    def connect(
        self, ns: str, address: str, port: int, *, source: str = "", timeout: float = 2.0
    ) -> str | None:
        """The responder's greeting, or None when no connection could be made."""
        argv = [sys.executable, "-c", CONNECT, address, str(port), source, str(timeout)]
        result = self.run_in(ns, argv, check=False, timeout=timeout + 20)
        return result.stdout.strip() if result.returncode == 0 else None

    def dhcp_lease(self, ns: str, tries: int = 3) -> dict[str, str] | None:
        """What ``busybox udhcpc`` on the guest's eth0 was offered, or None."""
        script = self.root / "udhcpc.sh"
        if not script.exists():
            script.write_text(UDHCPC_SCRIPT)
            script.chmod(0o755)
        argv = ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", str(tries), "-T", "1"]
        result = self.run_in(ns, [*argv, "-s", str(script), "-O", "mtu"], check=False, timeout=30)
        for line in result.stdout.splitlines():
            if line.startswith("LEASE "):
                return dict(word.split("=", 1) for word in line.split()[1:])
        return None

    # -- looking ------------------------------------------------------------------------------

    def links_in(self, host: Host) -> dict[str, dict[str, Any]]:
        out = subp(["ip", "-n", host.ns, "-json", "-details", "link", "show"]).stdout
        return {link["ifname"]: link for link in json.loads(out or "[]")}

    def nft_tables(self, host: Host) -> list[str]:
        out = self.run_in(host.ns, ["nft", "-j", "list", "tables"]).stdout
        entries = json.loads(out)["nftables"]
        return [f"{t['table']['family']} {t['table']['name']}" for t in entries if "table" in t]

    def dnsmasq_pids(self) -> list[int]:
        """Every dnsmasq whose configuration lives under this lab."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if (
                    argv
                    and argv[0].endswith(b"dnsmasq")
                    and str(self.root).encode() in b" ".join(argv)
                ):
                    found.append(int(entry.name))
        return found

    def lab_namespaces(self) -> list[str]:
        out = subp(["ip", "-json", "netns", "list"]).stdout
        return [e["name"] for e in json.loads(out or "[]") if e["name"].startswith(self.tag)]

    # -- cleaning -----------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        for host in self.hosts:
            with contextlib.suppress(SubpError):
                subp(self.agent_argv(host, "cleanup"), cwd=REPO, check=False, timeout=60)
        for pid in self.dnsmasq_pids():  # an agent that could not clean up after itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.dnsmasq_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        for ns in [*reversed(self.namespaces), *self.lab_namespaces()]:
            subp(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
        shutil.rmtree(self.root, ignore_errors=True)
