"""The QMP client against a scripted QMP server thread (no QEMU): handshake, id matching,
events set aside, errors, timeouts, broken peers, long socket paths."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nubes.agent.hypervisors.qemu.qmp import (
    MAX_SUN_PATH,
    QMPClient,
    QMPCommandError,
    QMPConnectionError,
    QMPError,
    QMPTimeout,
)

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}
Handler = Callable[[dict[str, Any]], list[Any]]
CLOSE = object()  # a handler's reply that hangs up


def line(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\r\n"  # QEMU ends its lines with CRLF


def answer(request: dict[str, Any], value: Any = None) -> dict[str, Any]:
    return {"return": {} if value is None else value, "id": request.get("id")}


class FakeQMP:
    """Serves one connection: greets (unless told not to), then answers each request with
    what ``handler`` returns (raw bytes are sent as they are). Records every request."""

    def __init__(
        self, sock: socket.socket, handler: Handler, greeting: Any = GREETING, trickle: bool = False
    ) -> None:
        self.sock = sock
        self.handler = handler
        self.greeting = greeting
        self.trickle = trickle
        self.requests: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def send(self, data: bytes) -> None:
        if self.trickle:  # one byte at a time: the client must reassemble lines
            for byte in data:
                self.sock.sendall(bytes([byte]))
        else:
            self.sock.sendall(data)

    def serve(self) -> None:
        try:
            if self.greeting is not None:
                self.send(
                    self.greeting if isinstance(self.greeting, bytes) else line(self.greeting)
                )
            with self.sock.makefile("rb") as reader:
                for raw in reader:
                    request = json.loads(raw)
                    self.requests.append(request)
                    for reply in self.handler(request):
                        if reply is CLOSE:
                            return
                        self.send(reply if isinstance(reply, bytes) else line(reply))
        except OSError:
            pass
        finally:
            self.sock.close()


def echo(request: dict[str, Any]) -> list[Any]:
    if request["execute"] == "qmp_capabilities":
        return [answer(request)]
    if request["execute"] == "query-status":
        return [answer(request, {"status": "running", "running": True})]
    if request["execute"] == "echo":
        return [answer(request, request.get("arguments"))]
    return [
        {
            "error": {"class": "CommandNotFound", "desc": f"{request['execute']} not found"},
            "id": request["id"],
        }
    ]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield client, server
    client.close()


def negotiated(
    pair: tuple[socket.socket, socket.socket], handler: Handler = echo, **kwargs: Any
) -> tuple[QMPClient, FakeQMP]:
    client_sock, server_sock = pair
    server = FakeQMP(server_sock, handler, **kwargs)
    client = QMPClient(client_sock, timeout=2.0)
    client.negotiate()
    return client, server


def test_handshake_reads_the_greeting_and_leaves_negotiation_mode(pair: Any) -> None:
    client, server = negotiated(pair)
    assert client.greeting["version"]["qemu"]["major"] == 7
    assert server.requests[0]["execute"] == "qmp_capabilities"
    assert client.execute("query-status") == {"status": "running", "running": True}


def test_arguments_are_sent_and_ids_are_unique(pair: Any) -> None:
    client, server = negotiated(pair)
    assert client.execute("echo", {"shutdown": "pause"}) == {"shutdown": "pause"}
    assert client.execute("echo") == {}
    assert "arguments" not in server.requests[2]
    ids = [r["id"] for r in server.requests]
    assert len(set(ids)) == len(ids)


def test_events_and_stale_answers_are_set_aside(pair: Any) -> None:
    def noisy(request: dict[str, Any]) -> list[Any]:
        if request["execute"] == "qmp_capabilities":
            return [answer(request)]
        return [
            {"event": "POWERDOWN", "timestamp": {"seconds": 1, "microseconds": 0}},
            {"return": {"stale": True}, "id": "somebody-else"},
            {"event": "SHUTDOWN", "data": {"guest": True}},
            answer(request, {"mine": True}),
        ]

    client, _ = negotiated(pair, noisy)
    assert client.execute("system_powerdown") == {"mine": True}
    assert [e["event"] for e in client.events] == ["POWERDOWN", "SHUTDOWN"]


def test_an_error_answer_raises_with_class_and_description(pair: Any) -> None:
    client, _ = negotiated(pair)
    with pytest.raises(QMPCommandError) as caught:
        client.execute("frobnicate")
    assert caught.value.error_class == "CommandNotFound"
    assert caught.value.command == "frobnicate"
    assert "not found" in str(caught.value)
    assert client.execute("query-status")["status"] == "running"  # the session goes on


def test_lines_split_across_reads_are_reassembled(pair: Any) -> None:
    client, _ = negotiated(pair, trickle=True)
    assert client.execute("echo", {"x": "y" * 300}) == {"x": "y" * 300}


def test_no_answer_is_a_timeout(pair: Any) -> None:
    client, _ = negotiated(
        pair, lambda r: [answer(r)] if r["execute"] == "qmp_capabilities" else []
    )
    started = time.monotonic()
    with pytest.raises(QMPTimeout):
        client.execute("query-status", timeout=0.2)
    assert time.monotonic() - started < 1.5


def test_no_greeting_is_a_timeout(pair: Any) -> None:
    client_sock, server_sock = pair
    FakeQMP(server_sock, echo, greeting=None)
    with pytest.raises(QMPTimeout):
        QMPClient(client_sock, timeout=0.2).negotiate()


@pytest.mark.parametrize(
    "greeting",
    [{"hello": "world"}, b"this is not json\n", b"[1, 2]\n"],
    ids=["not-qmp", "not-json", "not-an-object"],
)
def test_a_peer_that_speaks_no_qmp_is_refused(pair: Any, greeting: Any) -> None:
    client_sock, server_sock = pair
    FakeQMP(server_sock, echo, greeting=greeting)
    with pytest.raises(QMPConnectionError):
        QMPClient(client_sock, timeout=1).negotiate()


def test_a_closed_connection_is_a_connection_error(pair: Any) -> None:
    client, _ = negotiated(
        pair, lambda r: [answer(r)] if r["execute"] == "qmp_capabilities" else [b'{"ret', CLOSE]
    )
    with pytest.raises(QMPConnectionError):
        client.execute("quit")
    with pytest.raises(QMPError):  # and stays one: nothing hangs
        client.execute("query-status", timeout=0.5)


def test_unexpected_answer_shape_is_an_error(pair: Any) -> None:
    client, _ = negotiated(
        pair, lambda r: [answer(r)] if r["execute"] == "qmp_capabilities" else [{"id": r["id"]}]
    )
    with pytest.raises(QMPError, match="unexpected"):
        client.execute("query-status")


def serve_unix(path: Path, handler: Handler = echo, delay: float = 0.0) -> threading.Thread:
    """Listen on ``path`` (after ``delay``) and serve one client, like QEMU's monitor."""
    dirfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    ready = threading.Event()

    def run() -> None:
        time.sleep(delay)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(f"/proc/self/fd/{dirfd}/{path.name}")  # the path may be too long
            listener.listen(1)
            ready.set()
            conn, _ = listener.accept()
            FakeQMP(conn, handler).thread.join()
        os.close(dirfd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not delay:
        assert ready.wait(5)
    return thread


def test_connect_over_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    serve_unix(path)
    with QMPClient.connect(path, timeout=2) as client:
        assert client.execute("query-status")["running"] is True


def test_connect_to_a_path_longer_than_sun_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "qmp.sock"
    assert len(os.fsencode(path)) > MAX_SUN_PATH
    serve_unix(path)
    with QMPClient.connect(path, timeout=2) as client:
        assert client.execute("echo", {"a": 1}) == {"a": 1}


def test_connect_waits_for_a_socket_that_appears_late(tmp_path: Path) -> None:
    path = tmp_path / "late.sock"
    with pytest.raises(QMPConnectionError, match="cannot connect"):
        QMPClient.connect(path, timeout=1)
    serve_unix(path, delay=0.3)
    with QMPClient.connect(path, timeout=2, wait=5) as client:
        assert client.execute("query-status")["status"] == "running"


def test_connect_to_a_dead_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()  # the file stays; nobody listens: what a killed QEMU leaves behind
    with pytest.raises(QMPConnectionError):
        QMPClient.connect(path, timeout=1, wait=0.2)
