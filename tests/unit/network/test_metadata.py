"""The metadata proxy's one decision (who is asking: the connection's source address, never a
header), its HTTP handling on a loopback socket with a pretend controller, and the agent's
side on a pretend host: route for guests, port map, credential file, process started once,
restarted on a configuration change, stopped when metadata goes."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from nubes.agent.network import agent as agent_module
from nubes.agent.network.agent import NetworkAgent, Options
from nubes.agent.network.metadata import (
    MODULE,
    MetadataPaths,
    port_map,
    with_metadata_route,
)
from nubes.agent.network.metadata_proxy import PortMap, Proxy, resolve
from nubes.domain.netdesired import HostNetworks
from tests.unit.network import samples
from tests.unit.network.test_routers import RouterHost

URL = "http://192.0.2.100:8770"


# -- who is asking ---------------------------------------------------------------------------


def ports_file(tmp_path: Path, mapping: dict[str, str]) -> PortMap:
    path = tmp_path / "ports.json"
    path.write_text(json.dumps(mapping))
    return PortMap(path)


def test_the_source_address_names_the_port_and_an_unknown_one_nothing(tmp_path: Path) -> None:
    ports = ports_file(tmp_path, {"10.0.0.10": "port-a", "10.0.0.11": "port-b"})
    assert resolve(ports, "10.0.0.10", "/latest/meta-data/instance-id") == (
        200,
        "port-a",
        "latest/meta-data/instance-id",
    )
    assert resolve(ports, "::ffff:10.0.0.11", "/openstack?x=1")[1] == "port-b"
    assert resolve(ports, "10.0.0.99", "/latest/meta-data/")[0] == 404


def test_paths_that_could_escape_upstream_are_refused(tmp_path: Path) -> None:
    ports = ports_file(tmp_path, {"10.0.0.10": "port-a"})
    for target in ("/../v1/hosts", "/latest/%2e%2e/x", "/a b", "http://evil/", "/./x"):
        assert resolve(ports, "10.0.0.10", target)[0] == 404, target


def test_the_port_map_is_re_read_when_the_agent_rewrites_it(tmp_path: Path) -> None:
    ports = ports_file(tmp_path, {"10.0.0.10": "port-a"})
    assert ports.lookup("10.0.0.10") == "port-a"
    (tmp_path / "ports.json").write_text(json.dumps({"10.0.0.10": "port-new", "10.0.0.12": "c"}))
    assert ports.lookup("10.0.0.10") == "port-new"


# -- HTTP on a loopback socket -----------------------------------------------------------------


def ask(ports: PortMap, request: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    asked: list[tuple[str, str]] = []

    async def fetch(port_id: str, path: str) -> tuple[int, str, bytes]:
        asked.append((port_id, path))
        return 200, "text/plain", f"{port_id}:{path}".encode()

    async def exchange() -> bytes:
        server = await asyncio.start_server(Proxy(ports, fetch).handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            await writer.wait_closed()
            return answer

    return asyncio.run(exchange()), asked


def test_a_guest_gets_what_the_controller_says_about_its_own_port(tmp_path: Path) -> None:
    ports = ports_file(tmp_path, {"127.0.0.1": "port-a"})
    answer, asked = ask(ports, b"GET /latest/meta-data/local-ipv4 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nport-a:latest/meta-data/local-ipv4")
    assert asked == [("port-a", "latest/meta-data/local-ipv4")]


def test_forwarding_headers_are_never_trusted(tmp_path: Path) -> None:
    ports = ports_file(tmp_path, {"10.0.0.11": "port-b"})  # the loopback client is unknown
    request = (
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n"
        b"X-Forwarded-For: 10.0.0.11\r\nX-Real-IP: 10.0.0.11\r\n\r\n"
    )
    answer, asked = ask(ports, request)
    assert answer.startswith(b"HTTP/1.0 404 ")
    assert asked == []


def test_other_methods_and_garbage_get_4xx(tmp_path: Path) -> None:
    ports = ports_file(tmp_path, {"127.0.0.1": "port-a"})
    assert ask(ports, b"POST /latest HTTP/1.1\r\n\r\n")[0].startswith(b"HTTP/1.0 405 ")
    assert ask(ports, b"\x16\x03\x01 nonsense\r\n\r\n")[0].startswith(b"HTTP/1.0 400 ")


# -- the agent's side --------------------------------------------------------------------------


def test_guests_are_routed_to_the_metadata_address_via_the_dhcp_port() -> None:
    routed = with_metadata_route(samples.network(), samples.dhcp_port())
    assert routed.subnets[0].host_routes == (("169.254.169.254/32", "10.0.0.2"),)


def test_the_port_map_holds_only_this_networks_instance_ports() -> None:
    other = replace(samples.vm_port("c3c3c3c3-0000-4000-8000-000000000003"), network_id="other")
    desired = samples.host(samples.dhcp_port(), samples.vm_port(), other)
    assert port_map(samples.network(), desired) == {"10.0.0.10": samples.VM1}


class MetadataHost(RouterHost):
    """Also answers the loopback's addresses and starts a pretend proxy (a fake /proc entry
    and its pid file), as the real one would after binding."""

    def __init__(self, proc: Path) -> None:
        super().__init__(proc)
        self.lo: dict[str, list[str]] = {}

    def _dispatch(self, argv: tuple[str, ...], input: str | None) -> tuple[int, str]:
        if MODULE in argv:
            config = json.loads(Path(argv[-1].split("=", 1)[1]).read_text())
            pid = self.add_process(list(argv))
            Path(config["pid"]).write_text(f"{pid}\n")
            return 0, ""
        if argv[:2] == ("ip", "-n") and argv[3:5] in (("-o", "address"), ("address", "add")):
            if argv[3] == "-o":
                return 0, "".join(
                    f"1: lo    inet {a} scope global lo\n" for a in self.lo.get(argv[2], [])
                )
            if argv[-1] == "lo":
                self.lo.setdefault(argv[2], []).append(argv[5])
                return 0, ""
        return super()._dispatch(argv, input)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MetadataHost:
    netfilter = tmp_path / "sys-net-bridge"
    netfilter.mkdir()
    monkeypatch.setattr(agent_module, "BRIDGE_NETFILTER", netfilter)
    return MetadataHost(tmp_path / "proc")


def agent_on(host: MetadataHost, run_dir: Path, credential: str = "host.h1.s3cret") -> NetworkAgent:
    options = replace(Options.parse(run_dir, {"local_ip": "192.0.2.1"}), host_credential=credential)
    return NetworkAgent(options, run=host, proc=host.proc, kill=host.kill)


def with_metadata(desired: HostNetworks) -> HostNetworks:
    return replace(desired, metadata_url=URL)


def proxies(host: MetadataHost) -> Sequence[int]:
    return [pid for pid, sig in host.signals]  # signals sent, for stop checks


def test_a_pass_with_a_metadata_url_runs_one_proxy_and_a_second_pass_nothing(
    host: MetadataHost, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    agent = agent_on(host, run_dir)
    report = agent.converge(with_metadata(samples.host()))
    assert report.errors == []
    paths = MetadataPaths(run_dir / "metadata" / samples.NET)
    assert json.loads(paths.ports.read_text()) == {
        "10.0.0.10": samples.VM1,
        "10.0.0.11": samples.VM2,
    }
    assert stat.S_IMODE(paths.credential.stat().st_mode) == 0o600
    assert paths.credential.read_text().strip() == "host.h1.s3cret"
    config = json.loads(paths.config.read_text())
    assert config["url"] == URL
    assert "s3cret" not in paths.config.read_text()
    assert "169.254.169.254/32,10.0.0.2" in (run_dir / "dhcp" / samples.NET / "opts").read_text()
    pid = int(paths.pid.read_text())
    assert all("s3cret" not in " ".join(c) for c in host.commands)

    again = agent_on(host, run_dir).converge(with_metadata(samples.host()))  # restarted agent
    assert (again.changes, again.errors) == ([], [])
    assert int(paths.pid.read_text()) == pid


def test_a_new_credential_restarts_the_proxy_and_no_url_stops_it(
    host: MetadataHost, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    agent_on(host, run_dir).converge(with_metadata(samples.host()))
    paths = MetadataPaths(run_dir / "metadata" / samples.NET)
    first = int(paths.pid.read_text())
    agent_on(host, run_dir, "host.h1.rotated").converge(with_metadata(samples.host()))
    assert first in proxies(host)
    second = int(paths.pid.read_text())
    assert second != first

    report = agent_on(host, run_dir).converge(samples.host())
    assert report.errors == []
    assert second in proxies(host)
    assert not (run_dir / "metadata").exists()
    assert "169.254.169.254" not in (run_dir / "dhcp" / samples.NET / "opts").read_text()


def test_without_a_credential_there_is_no_proxy_and_the_report_says_why(
    host: MetadataHost, tmp_path: Path
) -> None:
    report = agent_on(host, tmp_path / "run", credential="").converge(with_metadata(samples.host()))
    assert report.errors == ["metadata: no host credential given to the network agent"]
    assert not (tmp_path / "run" / "metadata").exists()
