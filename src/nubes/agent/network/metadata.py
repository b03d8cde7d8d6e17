"""The metadata service on this host (see :mod:`.metadata_proxy` for the process itself): per
network with a DHCP namespace here, 169.254.169.254 on that namespace's loopback, a route to
it handed to guests by DHCP (option 121 via the DHCP port's address), and one proxy process,
started, adopted after an agent restart, restarted when its configuration or the host
credential changes, and stopped, always by PID.

Files, in ``<run_dir>/metadata/<network>/``: ``proxy.json`` (configuration), ``ports.json``
(this host's ports on the network: address -> port id, which the running proxy re-reads),
``credential`` (the host credential, 0600: never on a command line), ``proxy.pid``,
``proxy.log``. A PID is trusted only when ``/proc/<pid>/cmdline`` is the proxy module with
this network's configuration file.

Why the address sits on the namespace's loopback, with ``arp_ignore`` on the DHCP port: a
VXLAN network spans hosts and each host's DHCP namespace would otherwise answer ARP for
169.254.169.254; routing to the local DHCP port's address instead makes every guest ask its
own host's proxy, the only one that knows its port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from nubes.agent.network.dnsmasq import (
    PROC,
    Kill,
    cmdline,
    stop_daemon,
    trim_log,
    wait_for_pid,
    write_if_changed,
)
from nubes.agent.network.runner import Run
from nubes.domain.netdesired import HostNetworks, Network, Port

METADATA_ADDRESS = "169.254.169.254"
MODULE = "nubes.agent.network.metadata_proxy"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
LOG_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class MetadataPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "proxy.json"

    @property
    def ports(self) -> Path:
        return self.root / "ports.json"

    @property
    def credential(self) -> Path:
        return self.root / "credential"

    @property
    def pid(self) -> Path:
        return self.root / "proxy.pid"

    @property
    def log(self) -> Path:
        return self.root / "proxy.log"


def with_metadata_route(network: Network, dhcp_port: Port) -> Network:
    """The network as dnsmasq should describe it: each DHCP subnet also routes
    169.254.169.254/32 via the DHCP port's address on that subnet."""
    own = dict(dhcp_port.fixed_ips)
    subnets = []
    for subnet in network.subnets:
        hop = own.get(subnet.id)
        if hop and subnet.enable_dhcp and subnet.ip_version == 4:
            route = (f"{METADATA_ADDRESS}/32", str(ipaddress.IPv4Address(hop)))
            subnet = replace(subnet, host_routes=(*subnet.host_routes, route))
        subnets.append(subnet)
    return replace(network, subnets=tuple(subnets))


def port_map(network: Network, desired: HostNetworks) -> dict[str, str]:
    """Source address -> port id for this host's instance ports on ``network`` (fixed IPs
    only: an allowed address pair may be shared, a fixed IP is one port's)."""
    return {
        str(ipaddress.ip_address(address)): port.id
        for port in sorted(desired.ports, key=lambda p: p.id)
        if port.network_id == network.id and port.device_owner.startswith("compute")
        for _, address in port.fixed_ips
    }


def config_text(paths: MetadataPaths, netns: str, network_id: str, url: str) -> str:
    data = {
        "netns": netns,
        "network_id": network_id,
        "url": url,
        "ports": str(paths.ports),
        "credential": str(paths.credential),
        "pid": str(paths.pid),
        "log": str(paths.log),
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_secret_if_changed(path: Path, text: str) -> bool:
    """Like :func:`write_if_changed`, but 0600 from the first byte."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(partial, path)
    return True


def is_ours(pid: int, paths: MetadataPaths, proc: Path = PROC) -> bool:
    argv = cmdline(pid, proc)
    return MODULE in argv and f"--config={paths.config}" in argv


def running_pid(paths: MetadataPaths, proc: Path = PROC) -> int | None:
    try:
        text = paths.pid.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and is_ours(int(text), paths, proc) else None


class MetadataProxy:
    def __init__(
        self, run: Run, paths: MetadataPaths, netns: str, proc: Path = PROC, kill: Kill = os.kill
    ) -> None:
        self.run = run
        self.paths = paths
        self.netns = netns
        self.proc = proc
        self.kill = kill

    def ensure(
        self,
        network: Network,
        desired: HostNetworks,
        inner: str,
        credential: str,
        changes: list[str],
    ) -> None:
        """The address, the files, and the process (started, or restarted when its
        configuration or credential changed; a port change needs nothing: it re-reads)."""
        self._ensure_address(inner, changes)
        self.paths.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.paths.root.chmod(0o755)
        ports = json.dumps(port_map(network, desired), indent=2, sort_keys=True) + "\n"
        if write_if_changed(self.paths.ports, ports):
            changes.append(f"metadata {self.netns}: port map written")
        text = config_text(self.paths, self.netns, network.id, desired.metadata_url)
        restart = write_if_changed(self.paths.config, text)
        restart |= write_secret_if_changed(self.paths.credential, credential + "\n")
        self._trim_log()
        pid = running_pid(self.paths, self.proc)
        if pid is not None and restart:
            self.stop(pid)
            changes.append(f"metadata {self.netns}: stopped pid {pid} (configuration changed)")
            pid = None
        if pid is None:
            changes.append(f"metadata {self.netns}: started pid {self.start()}")

    def _ensure_address(self, inner: str, changes: list[str]) -> None:
        ns = ["ip", "netns", "exec", self.netns]
        shown = self.run(["ip", "-n", self.netns, "-o", "address", "show", "dev", "lo"]).stdout
        if f" {METADATA_ADDRESS}/32 " not in shown:
            self.run(
                ["ip", "-n", self.netns, "address", "add", f"{METADATA_ADDRESS}/32", "dev", "lo"]
            )
            changes.append(f"{self.netns}: added {METADATA_ADDRESS} on lo")
        key = f"net.ipv4.conf.{inner}.arp_ignore"
        if self.run([*ns, "sysctl", "-n", key]).stdout.strip() != "1":
            self.run([*ns, "sysctl", "-w", f"{key}=1"])
            changes.append(f"{self.netns}: {key}=1")

    def start(self) -> int:
        self.paths.pid.unlink(missing_ok=True)
        # The proxy binds inside the namespace, then detaches; its parent exits at once.
        self.run([sys.executable, "-m", MODULE, f"--config={self.paths.config}"])
        return wait_for_pid(
            lambda: running_pid(self.paths, self.proc),
            f"metadata proxy for {self.netns} did not write {self.paths.pid}",
            START_TIMEOUT,
        )

    def stop(self, pid: int | None = None) -> int | None:
        """SIGTERM, then SIGKILL; only ever a PID that is this network's proxy."""
        pid = running_pid(self.paths, self.proc) if pid is None else pid
        if pid is None:
            return None
        stop_daemon(
            pid,
            lambda p: is_ours(p, self.paths, self.proc),
            self.kill,
            f"metadata proxy (pid {pid}) for {self.netns}",
        )
        self.paths.pid.unlink(missing_ok=True)
        return pid

    def _trim_log(self) -> None:
        trim_log(self.paths.log)
