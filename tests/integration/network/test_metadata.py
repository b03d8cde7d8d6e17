"""The metadata service on real kernel objects: two guests on one network ask
http://169.254.169.254/ and each gets its own data from a pretend controller (which records
the port id it is asked about); a guest sending from its neighbour's address gets nothing.
The agent runs in a lab host namespace (tag ``md7…``), the proxy it starts lives there too,
and the pretend controller listens on that host's loopback."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nubes.domain.netdesired import HostNetworks, to_json
from nubes.subp import subp
from tests.integration.network.builders import network, port
from tests.integration.network.lab import REPO, Host, Lab, missing
from tests.integration.network.test_routers import TaggedLab

pytestmark = pytest.mark.integration

CREDENTIAL = "host.test.metadata-secret"
CONTROLLER = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        parts = self.path.split("/", 5)  # "", v1, agent, metadata, port, path
        auth = self.headers.get("Authorization", "")
        body = f"port={parts[4]} path={parts[5]} auth={auth}".encode()
        self.send_response(200); self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""
CONVERGE = """
import json, sys
from dataclasses import replace
from pathlib import Path
from nubes.agent.network.agent import NetworkAgent, Options
from nubes.domain.netdesired import from_json
desired, credential, run_dir, options = sys.argv[1:5]
parsed = Options.parse(Path(run_dir), json.loads(options))
parsed = replace(parsed, host_credential=Path(credential).read_text().strip())
report = NetworkAgent(parsed).converge(from_json(json.loads(Path(desired).read_text())))
print(json.dumps({"changes": report.changes, "errors": report.errors}))
"""
FETCH = """
import sys, urllib.request
source = sys.argv[2]
try:
    if source:
        import http.client
        conn = http.client.HTTPConnection(
            "169.254.169.254", 80, timeout=2, source_address=(source, 0)
        )
        conn.request("GET", sys.argv[1]); print(conn.getresponse().read().decode())
    else:
        url = "http://169.254.169.254" + sys.argv[1]
        print(urllib.request.urlopen(url, timeout=5).read().decode())
except OSError as exc:
    print(f"failed: {exc}"); sys.exit(1)
"""


@pytest.fixture
def mlab() -> Iterator[Lab]:
    why = missing()
    if why:
        pytest.skip(why)
    made = TaggedLab("md7")
    try:
        yield made
    finally:
        made.close()


def converge(lab: Lab, host: Host, desired: HostNetworks) -> dict[str, Any]:
    """One pass of an agent that was given the host credential (never on a command line:
    a 0600 file here, the agent's identity in production)."""
    secret = lab.root / "credential"
    secret.write_text(CREDENTIAL)
    secret.chmod(0o600)
    wanted = lab.root / "desired.json"
    wanted.write_text(json.dumps(to_json(desired)))
    argv = [
        "nsenter", f"--net=/run/netns/{host.ns}", sys.executable, "-c", CONVERGE,
        str(wanted), str(secret), str(host.run_dir), json.dumps(host.options()),
    ]  # fmt: skip
    result = subp(argv, cwd=REPO, timeout=60)
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    return report


def fetch(lab: Lab, guest: str, path: str, source: str = "") -> str | None:
    argv = [sys.executable, "-c", FETCH, path, source]
    result = lab.run_in(guest, argv, check=False, timeout=30)
    return result.stdout.strip() if result.returncode == 0 else None


def test_each_guest_gets_its_own_metadata_and_a_spoofer_gets_nothing(mlab: Lab) -> None:
    h1 = mlab.host("h1", "192.0.2.1")
    controller = mlab.spawn_agent(h1, CONTROLLER)
    assert controller.stdout is not None
    url = f"http://127.0.0.1:{int(controller.stdout.readline())}"
    net = network()
    dhcp = port(net, "10.77.0.2", "network:dhcp")
    a, b = port(net, "10.77.0.10"), port(net, "10.77.0.11")
    guests = {}
    for name, vm in (("ga", a), ("gb", b)):
        guests[name] = mlab.guest(name, h1, vm, f"{vm.fixed_ips[0][1]}/24")
        # What DHCP option 121 tells a guest (checked in the unit tests' opts file).
        subp(["ip", "-n", guests[name], "route", "add", "169.254.169.254/32", "via", "10.77.0.2"])
    desired = HostNetworks((net,), (dhcp, a, b), metadata_url=url)
    converge(mlab, h1, desired)

    answer = fetch(mlab, guests["ga"], "/latest/meta-data/instance-id")
    assert answer == f"port={a.id} path=latest/meta-data/instance-id auth=Bearer {CREDENTIAL}"
    answer = fetch(mlab, guests["gb"], "/openstack/latest/meta_data.json")
    assert answer is not None
    assert answer.startswith(f"port={b.id} path=openstack/latest/meta_data.json")

    # a sends from b's address: anti-spoofing drops it before it reaches the proxy.
    subp(["ip", "-n", guests["ga"], "addr", "add", "10.77.0.11/32", "dev", "eth0"])
    assert fetch(mlab, guests["ga"], "/latest/meta-data/instance-id", source="10.77.0.11") is None

    # Converging again changes nothing; a restarted proxy is not needed for new ports.
    assert converge(mlab, h1, desired)["changes"] == []
    pid_file = Path(h1.run_dir) / "metadata" / net.id / "proxy.pid"
    pid = int(pid_file.read_text())
    c = port(net, "10.77.0.12")
    gc = mlab.guest("gc", h1, c, "10.77.0.12/24")
    subp(["ip", "-n", gc, "route", "add", "169.254.169.254/32", "via", "10.77.0.2"])
    converge(mlab, h1, HostNetworks((net,), (dhcp, a, b, c), metadata_url=url))
    assert int(pid_file.read_text()) == pid
    assert (fetch(mlab, gc, "/latest/user-data") or "").startswith(f"port={c.id} ")

    # No metadata URL any more: the proxy goes.
    converge(mlab, h1, HostNetworks((net,), (dhcp, a, b, c)))
    assert not pid_file.exists()
    assert not Path(f"/proc/{pid}").exists() or "metadata_proxy" not in Path(
        f"/proc/{pid}/cmdline"
    ).read_text(errors="replace")
    assert fetch(mlab, guests["ga"], "/latest/meta-data/instance-id") is None
