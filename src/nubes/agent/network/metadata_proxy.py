"""The metadata proxy: one process per network on a host, answering guests at
169.254.169.254:80 inside that network's DHCP namespace, and asking the controller over the
host's own network (``GET {url}/v1/agent/metadata/{port}/{path}``, host credential).

Why one process in two namespaces: the listening socket is made inside the DHCP namespace
(``setns`` for the moment of ``bind``), everything else runs in the host's, the only place
the controller can be reached from. So a guest never gets a route toward the controller.

Who is asking is decided only by the TCP connection's source address on this network,
looked up in the port map the agent writes (``ports.json``: address -> port id, this host's
ports only; re-read when it changes). Anti-spoofing keeps a guest from sending from another
port's address, so the address is the identity; headers (``X-Forwarded-For`` and the like)
are never read. An unknown address gets 404.

Run by the agent (``python -m nubes.agent.network.metadata_proxy --config=FILE``): it binds,
daemonizes and writes its pid file. It keeps the agent's user (root): dropping to ``nobody``
breaks Python's lazy imports wherever the interpreter lives under a private directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

log = logging.getLogger("nubes.metadata_proxy")

METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 80
CLONE_NEWNET = 0x40000000
MAX_HEAD = 8192
UPSTREAM_TIMEOUT = 10.0
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._~/=-]*$")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}

#: (port id, path) -> (status, content type, body)
Fetch = Callable[[str, str], Awaitable[tuple[int, str, bytes]]]


@dataclass(frozen=True)
class Config:
    netns: str
    network_id: str
    url: str
    ports: Path
    credential: Path
    pid: Path
    log: Path
    address: str = METADATA_ADDRESS
    port: int = METADATA_PORT

    @classmethod
    def load(cls, path: Path) -> Config:
        data = json.loads(path.read_text())
        return cls(
            netns=str(data["netns"]),
            network_id=str(data["network_id"]),
            url=str(data["url"]).rstrip("/"),
            ports=Path(data["ports"]),
            credential=Path(data["credential"]),
            pid=Path(data["pid"]),
            log=Path(data["log"]),
            address=str(data.get("address", METADATA_ADDRESS)),
            port=int(data.get("port", METADATA_PORT)),
        )


class PortMap:
    """Source address -> port id, from the agent's file, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._map: dict[str, str] = {}

    def lookup(self, address: str) -> str | None:
        with contextlib.suppress(OSError, ValueError):
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                data = json.loads(self.path.read_text())
                self._map = {str(k): str(v) for k, v in data.items()}
                self._stamp = stamp
        return self._map.get(_plain(address))


def _plain(address: str) -> str:
    """An IPv4 client seen on a dual-stack socket is ``::ffff:a.b.c.d``."""
    return address.removeprefix("::ffff:")


def resolve(ports: PortMap, peer: str, target: str) -> tuple[int, str, str]:
    """(status, port id, path) for a request line's target from ``peer``; status 200 means
    forward. The path is kept to plain characters: it becomes part of a URL upstream."""
    path = target.split("?", 1)[0].split("#", 1)[0] or "/"
    if not _SAFE_PATH.match(path) or any(p in (".", "..") for p in path.split("/")):
        return 404, "", ""
    port_id = ports.lookup(peer)
    if port_id is None:
        return 404, "", ""
    return 200, port_id, path.lstrip("/")


class Proxy:
    def __init__(self, ports: PortMap, fetch: Fetch) -> None:
        self.ports = ports
        self.fetch = fetch

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, media, body = await self._answer(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, media, body = 400, "text/plain", b"bad request\n"
        except Exception:  # one guest's request must never stop the proxy
            log.exception("metadata request failed")
            status, media, body = 502, "text/plain", b"metadata unavailable\n"
        head = (
            f"HTTP/1.0 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {media}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            writer.write(head.encode() + body)
            await writer.drain()
            writer.close()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, str, bytes]:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        if len(raw) > MAX_HEAD:
            raise ValueError("request head too long")
        words = raw.split(b"\r\n", 1)[0].decode("ascii").split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            raise ValueError("not an HTTP request line")
        if words[0] not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        peer = str(writer.get_extra_info("peername")[0])
        status, port_id, path = resolve(self.ports, peer, words[1])
        if status != 200:
            return status, "text/plain", b"not found\n"
        code, media, body = await self.fetch(port_id, path)
        return code, media, (b"" if words[0] == "HEAD" else body)


def upstream(config: Config, credential: str, client: httpx.AsyncClient) -> Fetch:
    async def fetch(port_id: str, path: str) -> tuple[int, str, bytes]:
        url = f"{config.url}/v1/agent/metadata/{quote(port_id, safe='')}/{quote(path)}"
        try:
            r = await client.get(url, headers={"Authorization": f"Bearer {credential}"})
        except httpx.HTTPError as exc:
            log.warning("controller unreachable: %s", exc)
            return 502, "text/plain", b"metadata unavailable\n"
        if r.status_code == 404:
            return 404, "text/plain", b"not found\n"
        if r.status_code != 200:
            log.warning("controller answered %s for port %s: %s", r.status_code, port_id, r.text)
            return 502, "text/plain", b"metadata unavailable\n"
        return 200, r.headers.get("content-type", "text/plain"), r.content

    return fetch


# -- the process ------------------------------------------------------------------------------


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def listen_in(netns: str, address: str, port: int) -> socket.socket:
    """A listening socket made inside ``netns`` (a socket keeps the namespace it was made in);
    this thread is back in its own namespace on return."""
    if not netns:
        return socket.create_server((address, port))
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.create_server((address, port))
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def _daemonize(config: Config) -> None:
    """Detach (double fork); the grandchild writes the pid file the agent waits for."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(config.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    partial = config.pid.with_name(f".{config.pid.name}.partial")
    partial.write_text(f"{os.getpid()}\n")
    os.replace(partial, config.pid)


async def serve(sock: socket.socket, config: Config, credential: str) -> None:
    async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT, trust_env=False) as client:
        proxy = Proxy(PortMap(config.ports), upstream(config, credential, client))
        server = await asyncio.start_server(proxy.handle, sock=sock, limit=MAX_HEAD)
        async with server:
            await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nubes.agent.network.metadata_proxy")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--foreground", action="store_true")
    args = parser.parse_args(argv)
    config = Config.load(args.config)
    credential = config.credential.read_text().strip()
    sock = listen_in(config.netns, config.address, config.port)
    if not args.foreground:
        _daemonize(config)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    log.info("serving network %s in %s", config.network_id, config.netns)
    asyncio.run(serve(sock, config, credential))
    return 0


if __name__ == "__main__":
    sys.exit(main())
