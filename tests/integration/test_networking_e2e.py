"""Networking end to end, with real packets through the whole stack: a controller and two
``lxc`` agents, each in its own test-host namespace, booting the tiny guest as containers.
One cloud is shared by the module's tests (it takes most of the time to make):

- two guests of one network on two hosts (VXLAN) get their reserved addresses by DHCP and
  reach each other's responders;
- another project's network, even with the same addresses, is out of reach, and a
  security-group rule opens exactly its port, until it is deleted;
- a guest sending from a forged IP or MAC is dropped;
- a floating IP makes a guest's responder reachable from a test host on the external (flat)
  network, and disassociating it stops that;
- the metadata service hands each guest its own data and keys, and nothing else.

The controller is reachable only inside the test network, so the test talks to it through a
small relay process in the controller's namespace. Everything made here (namespaces, links,
processes, containers, files) is removed at the end, even after a failure.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nubes.agent.hypervisors.lxc import LxcHypervisor
from nubes.agent.hypervisors.lxc.layout import container_name
from nubes.agent.run import network_run_dir
from nubes.images.tiny import TinyImage
from nubes.subp import SubpError, SubpResult, subp, which
from tests.integration.cloudproc import sweep_agent_run_dir
from tests.integration.netns import TestHosts, missing_feature

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = """listen_host = "0.0.0.0"
ip_cooldown_seconds = 0
[password_hashing]
memory_kib = 1024
time_cost = 1
parallelism = 1
"""
PORT = 8770
PASSWORD = "correct-horse-1"
EXT_CIDR = "198.51.100.0/24"
EXT_GATEWAY = "198.51.100.1"  # the external test host itself
TENANT_CIDR = "10.61.0.0/24"  # both projects' networks: the same addresses, never shared
BOOT_TIMEOUT = 60.0
ADDR_MARKER = "NUBES-TINY-ADDR"

# One JSON request per line on stdin, one JSON answer per line on stdout: the test's HTTP
# client, living where the controller can be reached.
RELAY = """
import httpx, json, sys
c = httpx.Client(base_url=sys.argv[1], timeout=30)
for line in sys.stdin:
    q = json.loads(line)
    headers = {"X-Auth-Token": q["token"]} if q.get("token") else {}
    try:
        if q.get("file"):
            with open(q["file"], "rb") as f:
                r = c.request(q["method"], q["path"], params=q.get("params"), content=f,
                              headers=headers)
        else:
            r = c.request(q["method"], q["path"], params=q.get("params"), json=q.get("json"),
                          headers=headers)
        try:
            body = r.json() if r.content else None
        except ValueError:
            body = r.text
        answer = {"status": r.status_code, "body": body}
    except Exception as exc:
        answer = {"status": 0, "body": repr(exc)}
    print(json.dumps(answer), flush=True)
"""


def missing() -> str | None:
    """Why this test cannot run here, or None."""
    why = missing_feature()
    if why:
        return why
    for tool in ("nft", "dnsmasq", "nsenter", "busybox", "lxc-attach"):
        if which(tool) is None:
            return f"{tool} is not installed"
    lxc = LxcHypervisor.probe()
    return f"the lxc driver cannot run here: {lxc}" if lxc else None


# A test host's agent sees the test host's own network devices in sysfs, as on a real host:
# LXC checks a bridge's existence in /sys/class/net, which nsenter --net alone leaves showing
# the machine's devices. A private mount namespace (propagation unchanged, so the namespaces
# the agent adds under the shared /run/netns stay visible to everyone) gets a sysfs of the
# host's network namespace over only the network devices' directories; /sys/fs/cgroup, which
# LXC needs, stays.
OWN_SYSFS = """set -e
mount --make-rprivate /sys
mount -t sysfs sysfs /sys/devices/virtual/net
mount --bind /sys/devices/virtual/net/class/net /sys/class/net
mount --bind /sys/devices/virtual/net/devices/virtual/net /sys/devices/virtual/net
exec "$@"
"""


class Hosts(TestHosts):
    """TestHosts under this module's prefix (``ne2``), plus an external test host whose
    bridge is the flat uplink (``up0``) of every compute host."""

    __test__ = False

    def _build(self) -> None:
        self.prefix = f"ne2{secrets.token_hex(2)}"
        self.ctl = f"{self.prefix}-ctl"
        self.hosts = [f"{self.prefix}-h{i + 1}" for i in range(len(self.hosts))]
        self.ext = f"{self.prefix}-ext"
        super()._build()
        subp(["ip", "netns", "add", self.ext])
        self.made.append(self.ext)
        self._ip(self.ext, "link", "set", "lo", "up")
        self._ip(self.ext, "link", "add", "br0", "type", "bridge")
        self._ip(self.ext, "link", "set", "br0", "up")
        self._ip(self.ext, "addr", "add", f"{EXT_GATEWAY}/24", "dev", "br0")
        for i, ns in enumerate(self.hosts):
            outer = f"{self.prefix}x{i}"
            subp([
                "ip", "link", "add", outer, "netns", self.ext, "type", "veth",
                "peer", "name", "up0", "netns", ns,
            ])  # fmt: skip
            self._ip(self.ext, "link", "set", outer, "master", "br0", "up")
            self._ip(ns, "link", "set", "up0", "up")


@dataclass
class Guest:
    id: str
    name: str
    host: str  # node-1 or node-2
    ns: str  # its test host's namespace
    address: str
    lxcpath: Path
    token: str  # of its project's user
    port_id: str = ""
    mac: str = ""

    def attach(self, *argv: str, timeout: float = 20) -> SubpResult:
        # LXC's command socket is an abstract one: reachable only from the host's network
        command = [
            "nsenter", f"--net=/run/netns/{self.ns}",
            "lxc-attach", "-n", container_name(self.id), "-P", str(self.lxcpath), "--",
        ]  # fmt: skip
        return subp([*command, *argv], check=False, timeout=timeout)

    def fetch(self, url: str, seconds: int = 3) -> str | None:
        """``url`` fetched from inside the guest, or None when nothing answered."""
        got = self.attach("timeout", str(seconds), "wget", "-q", "-O", "-", url)
        return got.stdout if got.returncode == 0 else None

    def echo(self, address: str, seconds: int = 3) -> str | None:
        """What the TCP echo responder (port 7) at ``address`` sent back, or None."""
        script = f"echo ping-{self.name} | timeout {seconds} nc {address} 7"
        got = self.attach("sh", "-c", script)
        return got.stdout.strip() if got.returncode == 0 and got.stdout.strip() else None

    def console(self) -> str:
        path = self.lxcpath / container_name(self.id) / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Cloud:
    hosts: Hosts
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    relay: subprocess.Popen[str] | None = None
    admin: str = ""
    tokens: dict[str, str] = field(default_factory=dict)  # project -> its user's token
    guests: dict[str, Guest] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # made resources by name

    @property
    def state(self) -> Path:
        return self.root / "controller"

    @property
    def url(self) -> str:
        return f"http://{self.hosts.address(self.hosts.ctl)}:{PORT}"

    def agent_dir(self, index: int) -> Path:
        return self.root / f"node-{index + 1}"

    def lxcpath(self, index: int) -> Path:
        return self.agent_dir(index) / "driver" / "lxc" / "containers"

    def options(self, index: int) -> dict[str, Any]:
        return {
            "namespace_prefix": f"{self.hosts.prefix}n{index + 1}",
            "physical_networks": {"physnet1": "up0"},
        }

    def spawn(self, ns: str, name: str, argv: list[str], *, own_sysfs: bool = False) -> None:
        inside = ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", OWN_SYSFS, "-"]
        command = ["nsenter", f"--net=/run/netns/{ns}", *(inside if own_sysfs else [])]
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    [*command, sys.executable, *argv],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=REPO,
                )
            )

    # -- the API, through the relay -------------------------------------------------------

    def request(self, method: str, path: str, token: str | None = None, **q: Any) -> Any:
        assert self.relay is not None
        assert self.relay.stdin
        assert self.relay.stdout
        line = {"method": method, "path": path, "token": token or self.admin, **q}
        self.relay.stdin.write(json.dumps(line) + "\n")
        self.relay.stdin.flush()
        return json.loads(self.relay.stdout.readline())

    def call(self, method: str, path: str, token: str | None = None, **q: Any) -> Any:
        answer = self.request(method, path, token, **q)
        assert 200 <= answer["status"] < 300, f"{method} {path}: {answer}"
        return answer["body"]

    def login(self, username: str, password: str, project: str) -> str:
        body = {"username": username, "password": password, "project": project}
        return str(self.call("POST", "/v1/auth/tokens", token="", json=body)["token"])

    @staticmethod
    def wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert result, f"timed out after {timeout} s waiting for {what}"
        return result

    # -- guests ---------------------------------------------------------------------------

    def boot(self, name: str, project: str, host: str, nic: dict[str, Any], **extra: Any) -> Guest:
        """A guest on ``host``, running, with the address its DHCP client got."""
        token = self.tokens[project]
        body = {
            "name": name,
            "image": "tiny",
            "flavor": "m1.tiny",
            "requirements": f'HOSTNAME = "{host}"',
            "networks": [nic],
            **extra,
        }
        server = self.call("POST", "/v1/servers", token, json=body)["servers"][0]
        index = int(host.rsplit("-", 1)[1]) - 1
        guest = Guest(
            server["id"], name, host, self.hosts.hosts[index], "", self.lxcpath(index), token
        )
        self.guests[name] = guest
        self.wait(
            lambda: self.call("GET", f"/v1/servers/{guest.id}", token)["state"] == "running",
            BOOT_TIMEOUT,
            f"{name} to run",
        )
        line = self.wait(lambda: _addr_line(guest.console()), 30, f"{name}'s addresses")
        guest.address = line.split()[2].split("/")[0] if line.split()[2] != "none" else ""
        ports = self.call("GET", "/v1/ports", token, params={"device_id": guest.id})["ports"]
        guest.port_id, guest.mac = ports[0]["id"], ports[0]["mac_address"]
        return guest

    def delete_guests(self) -> None:
        for guest in self.guests.values():
            self.request("DELETE", f"/v1/servers/{guest.id}", self.admin)
        deadline = time.monotonic() + 60
        for guest in self.guests.values():
            while time.monotonic() < deadline:
                if self.request("GET", f"/v1/servers/{guest.id}", self.admin)["status"] == 404:
                    break
                time.sleep(0.3)

    # -- ending ---------------------------------------------------------------------------

    def close(self) -> None:
        if self.relay is not None and self.admin:
            with contextlib.suppress(Exception):
                self.delete_guests()
        for proc in reversed(self.procs):  # agents, then the controller: ours, by PID
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self.relay is not None:
            self.relay.kill()
            self.relay.wait(10)
            for stream in (self.relay.stdin, self.relay.stdout):
                if stream is not None:
                    stream.close()
        for index, ns in enumerate(self.hosts.hosts):
            self._stop_containers(ns, self.lxcpath(index))
            prefix = {"namespace_prefix": self.options(index)["namespace_prefix"]}
            argv = [
                "nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m",
                "nubes.agent.network", "cleanup", "--run-dir",
                str(network_run_dir(self.agent_dir(index))), "--options", json.dumps(prefix),
            ]  # fmt: skip
            with contextlib.suppress(SubpError):
                subp(argv, cwd=REPO, check=False, timeout=60)
            sweep_agent_run_dir(self.agent_dir(index))  # what a crashed agent left under /run
        for pid in processes_mentioning(str(self.root)):  # dnsmasq, proxies left by a crash
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for ns in our_namespaces(self.hosts.prefix):
            subp(["ip", "netns", "del", ns], check=False)

    @staticmethod
    def _stop_containers(ns: str, lxcpath: Path) -> None:
        """Containers an agent could not delete: their mounts live in the agent's mount
        namespace and go with its last process."""
        if not lxcpath.is_dir():
            return
        for entry in lxcpath.iterdir():
            argv = ["lxc-stop", "-n", entry.name, "-P", str(lxcpath), "-k"]
            subp(["nsenter", f"--net=/run/netns/{ns}", *argv], check=False)


def _addr_line(console: str) -> str | None:
    for line in console.splitlines():
        if line.startswith(ADDR_MARKER):
            return line
    return None


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def our_namespaces(prefix: str) -> list[str]:
    out = subp(["ip", "-json", "netns", "list"]).stdout
    return [e["name"] for e in json.loads(out or "[]") if e["name"].startswith(prefix)]


def start(cloud: Cloud, image: TinyImage) -> None:
    hosts = cloud.hosts
    cloud.state.mkdir()
    (cloud.state / "nubes.toml").write_text(CONFIG)
    argv = ["-m", "nubes.controller.run", "--state-dir", str(cloud.state), "--port", str(PORT)]
    cloud.spawn(hosts.ctl, "controller", argv)
    cloud.relay = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{hosts.ctl}", sys.executable, "-c", RELAY, cloud.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    password = cloud.state / "admin-password"
    cloud.wait(password.exists, 60, "the controller's admin password")
    cloud.wait(lambda: cloud.request("GET", "/healthz", "")["status"] == 200, 60, "the controller")
    cloud.admin = cloud.login("admin", password.read_text().strip(), "admin")
    token = cloud.call("POST", "/v1/host-tokens", json={"uses": 2})["token"]
    for index, ns in enumerate(hosts.hosts):
        cloud.spawn(ns, f"node-{index + 1}", [
            "-m", "nubes.agent.run", "--state-dir", str(cloud.agent_dir(index)),
            "--url", cloud.url, "--token", token, "--name", f"node-{index + 1}",
            "--driver", "lxc", "--network-options", json.dumps(cloud.options(index)),
        ], own_sysfs=True)  # fmt: skip
    image_id = cloud.call("POST", "/v1/images", json={"name": "tiny", "visibility": "public"})["id"]
    cloud.call(
        "PUT", f"/v1/images/{image_id}/file", file=str(image.rootfs), params={"kind": "rootfs"}
    )
    cloud.call("PUT", f"/v1/images/{image_id}/file", file=str(image.disk))
    cloud.wait(
        lambda: (
            [h["state"] for h in cloud.call("GET", "/v1/hosts")["hosts"]]
            == ["monitored", "monitored"]
        ),
        60,
        "both hosts to join",
    )
    for project in ("p1", "p2"):
        made = cloud.call("POST", "/v1/projects", json={"name": f"{hosts.prefix}{project}"})
        user = f"{hosts.prefix}u{project}"
        body = {"name": user, "password": PASSWORD, "project": made["id"], "role": "member"}
        cloud.call("POST", "/v1/users", json=body)
        cloud.tokens[project] = cloud.login(user, PASSWORD, made["id"])
        network = cloud.call("POST", "/v1/networks", cloud.tokens[project], json={"name": "net"})
        subnet = cloud.call(
            "POST",
            "/v1/subnets",
            cloud.tokens[project],
            json={"name": "sub", "network_id": network["id"], "cidr": TENANT_CIDR},
        )
        cloud.ids[f"{project}-net"] = network["id"]
        cloud.ids[f"{project}-subnet"] = subnet["id"]
        for key in ("k1", "k2"):
            body = {"name": f"{project}{key}"}  # generated: each a key of its own
            cloud.ids[f"{project}{key}"] = cloud.call(
                "POST", "/v1/keypairs", cloud.tokens[project], json=body
            )["public_key"]


@pytest.fixture(scope="module")
def cloud(tiny_image: TinyImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    why = missing()
    if why:
        pytest.skip(why)
    hosts = Hosts(2)
    # world-readable: dnsmasq re-reads its files as nobody
    root = Path("/tmp") / hosts.prefix
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    made = Cloud(hosts, root)
    try:
        start(made, tiny_image)
        p1 = {"network": "net"}
        made.boot("a1", "p1", "node-1", {**p1, "fixed_ip": "10.61.0.11"},
                  keypair="p1k1", user_data="a1-secret")  # fmt: skip
        made.boot("a2", "p1", "node-2", {**p1, "fixed_ip": "10.61.0.12"},
                  keypair="p1k2", user_data="a2-secret")  # fmt: skip
        yield made
    finally:
        try:
            made.close()
            leftovers = {
                "containers": [p for i in range(2) for p in _listed(made.lxcpath(i))],
                "processes": processes_mentioning(str(root)),
                "namespaces": our_namespaces(hosts.prefix),
            }
        finally:
            hosts.close()
            _copy_logs(root, tmp_path_factory)
            shutil.rmtree(root, ignore_errors=True)
        assert leftovers == {"containers": [], "processes": [], "namespaces": []}


def _listed(lxcpath: Path) -> list[str]:
    if not lxcpath.is_dir():
        return []
    return subp(["lxc-ls", "-P", str(lxcpath)], check=False).stdout.split()


def _copy_logs(root: Path, factory: pytest.TempPathFactory) -> None:
    """Keep the processes' logs (pytest's own temporary directory) for a failure's reader."""
    logs = factory.mktemp("ne2-logs")
    for log in root.glob("*.log"):
        shutil.copy(log, logs / log.name)


# -- the tests ------------------------------------------------------------------------------


def test_two_guests_on_two_hosts_get_their_addresses_and_reach_each_other(cloud: Cloud) -> None:
    a1, a2 = cloud.guests["a1"], cloud.guests["a2"]
    assert (a1.host, a1.address) == ("node-1", "10.61.0.11")
    assert (a2.host, a2.address) == ("node-2", "10.61.0.12")
    assert a1.fetch("http://10.61.0.12/") == "a2\n"
    assert a2.fetch("http://10.61.0.11/") == "a1\n"
    assert a1.echo("10.61.0.12") == "ping-a1"
    assert a2.echo("10.61.0.11") == "ping-a2"


def test_projects_are_apart_and_a_rule_opens_exactly_its_port(cloud: Cloud) -> None:
    p2 = cloud.tokens["p2"]
    group = cloud.call("POST", "/v1/security-groups", p2, json={"name": "web"})
    port = cloud.call(
        "POST",
        "/v1/ports",
        p2,
        json={
            "network_id": cloud.ids["p2-net"],
            "fixed_ips": [{"ip_address": "10.61.0.13"}],
            "security_groups": [group["id"]],
        },
    )
    b1 = cloud.boot("b1", "p2", "node-1", {"port": port["id"]})
    b2 = cloud.boot("b2", "p2", "node-2", {"network": "net", "fixed_ip": "10.61.0.14"})
    a1 = cloud.guests["a1"]
    assert (b1.address, b2.address) == ("10.61.0.13", "10.61.0.14")

    # same addresses, other project: p1's guest on the same host never reaches b1 or b2
    assert a1.fetch("http://10.61.0.13/") is None
    assert a1.echo("10.61.0.14") is None
    # b1's group has no ingress rule: nothing reaches it, even from its own network
    assert b2.fetch("http://10.61.0.13/") is None
    assert b2.echo("10.61.0.13") is None

    rule = cloud.call(
        "POST",
        "/v1/security-group-rules",
        p2,
        json={
            "security_group_id": group["id"],
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 80,
        },
    )
    assert cloud.wait(lambda: b2.fetch("http://10.61.0.13/"), 20, "port 80 to open") == "b1\n"
    assert b2.echo("10.61.0.13") is None  # port 7 stays closed
    assert a1.fetch("http://10.61.0.13/") is None  # and other projects stay out

    cloud.call("DELETE", f"/v1/security-group-rules/{rule['id']}", p2)
    cloud.wait(lambda: b2.fetch("http://10.61.0.13/", 2) is None, 20, "port 80 to close")


def test_a_guest_sending_from_a_forged_ip_or_mac_is_dropped(cloud: Cloud) -> None:
    p1, a1 = cloud.tokens["p1"], cloud.guests["a1"]
    # a2's groups let the whole subnet in: only anti-spoofing can stop what follows
    groups = cloud.call("GET", "/v1/security-groups", p1, params={"name": "default"})
    rule = cloud.call(
        "POST",
        "/v1/security-group-rules",
        p1,
        json={
            "security_group_id": groups["security_groups"][0]["id"],
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 80,
            "remote_ip_prefix": TENANT_CIDR,
        },
    )
    try:
        forge(a1)
    finally:
        cloud.call("DELETE", f"/v1/security-group-rules/{rule['id']}", p1)


def forge(a1: Guest) -> None:
    assert a1.fetch("http://10.61.0.12/") == "a2\n"
    # forged IP: a route that makes the guest send to a2 from an address not its own
    forged_route = ["ip", "route", "replace", "10.61.0.12/32", "dev", "eth0", "src", "10.61.0.50"]
    assert a1.attach("ip", "addr", "add", "10.61.0.50/32", "dev", "eth0").returncode == 0
    assert a1.attach(*forged_route).returncode == 0
    try:
        assert a1.fetch("http://10.61.0.12/") is None
    finally:
        a1.attach("ip", "route", "del", "10.61.0.12/32")
        a1.attach("ip", "addr", "del", "10.61.0.50/32", "dev", "eth0")
    assert a1.fetch("http://10.61.0.12/") == "a2\n"

    # forged MAC: the guest's own address, from another MAC
    mac = a1.attach("cat", "/sys/class/net/eth0/address").stdout.strip()
    assert a1.attach("ip", "link", "set", "eth0", "address", "fa:16:3e:00:00:99").returncode == 0
    try:
        a1.attach("ip", "neigh", "flush", "dev", "eth0")
        assert a1.fetch("http://10.61.0.12/") is None
    finally:
        a1.attach("ip", "link", "set", "eth0", "address", mac)
        a1.attach("ip", "neigh", "flush", "dev", "eth0")
    assert Cloud.wait(lambda: a1.fetch("http://10.61.0.12/"), 20, "a1 heard again") == "a2\n"


def test_a_floating_ip_reaches_a_guest_from_the_external_network_until_disassociated(
    cloud: Cloud,
) -> None:
    p1 = cloud.tokens["p1"]
    ext = cloud.call(
        "POST",
        "/v1/networks",
        json={
            "name": "ext",
            "network_type": "flat",
            "physical_network": "physnet1",
            "router_external": True,
        },
    )
    cloud.call(
        "POST",
        "/v1/subnets",
        json={"name": "ext-sub", "network_id": ext["id"], "cidr": EXT_CIDR, "enable_dhcp": False},
    )
    router = cloud.call(
        "POST",
        "/v1/routers",
        p1,
        json={"name": "r1", "external_gateway_info": {"network_id": ext["id"]}},
    )
    cloud.call(
        "POST",
        f"/v1/routers/{router['id']}/interfaces",
        p1,
        json={"subnet_id": cloud.ids["p1-subnet"]},
    )
    groups = cloud.call("GET", "/v1/security-groups", p1, params={"name": "default"})
    cloud.call(
        "POST",
        "/v1/security-group-rules",
        p1,
        json={
            "security_group_id": groups["security_groups"][0]["id"],
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 80,
            "remote_ip_prefix": EXT_CIDR,
        },
    )
    a1 = cloud.guests["a1"]
    fip = cloud.call(
        "POST",
        "/v1/floating-ips",
        p1,
        json={"floating_network_id": ext["id"], "port_id": a1.port_id},
    )
    address = fip["floating_ip_address"]

    def outside() -> str | None:
        argv = ["timeout", "3", "busybox", "wget", "-q", "-O", "-", f"http://{address}/"]
        got = subp(["ip", "netns", "exec", cloud.hosts.ext, *argv], check=False, timeout=20)
        return got.stdout if got.returncode == 0 else None

    assert cloud.wait(outside, 30, "the floating IP to answer") == "a1\n"
    cloud.call("DELETE", f"/v1/floating-ips/{fip['id']}/association", p1)
    cloud.wait(lambda: outside() is None, 20, "the floating IP to stop answering")


def test_the_metadata_service_gives_each_guest_its_own_data_and_nothing_else(
    cloud: Cloud,
) -> None:
    base = "http://169.254.169.254"
    for name, other, key, other_key in (
        ("a1", "a2", "p1k1", "p1k2"),
        ("a2", "a1", "p1k2", "p1k1"),
    ):
        guest, them = cloud.guests[name], cloud.guests[other]
        raw = guest.fetch(f"{base}/openstack/latest/meta_data.json")
        assert raw is not None, f"{name} got no metadata"
        meta = json.loads(raw)
        assert meta["uuid"] == guest.id
        assert meta["hostname"] == name
        assert list(meta["public_keys"].values()) == [cloud.ids[key]]
        assert cloud.ids[other_key] not in raw
        assert them.id not in raw
        assert guest.fetch(f"{base}/openstack/latest/user_data") == f"{name}-secret"
        assert guest.fetch(f"{base}/latest/meta-data/local-ipv4") == guest.address
        network = guest.fetch(f"{base}/openstack/latest/network_data.json")
        assert network is not None
        assert them.address not in network
        links = json.loads(network)["links"]
        assert [link["ethernet_mac_address"] for link in links] == [guest.mac]
