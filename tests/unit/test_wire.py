"""The controller's HTTP protocol sends a response's head and body in one write."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from nubes.controller.wire import MERGE_LIMIT, HeadWithBody, OneWriteHttpProtocol

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Transport(asyncio.Transport):
    """Records each write (one ``send()`` on a real socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8774)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_head_goes_out_with_the_body_that_follows_it():
    async def main() -> Transport:
        raw = Transport()
        wire = HeadWithBody(raw, asyncio.get_running_loop())
        wire.write(HEAD)
        assert raw.writes == []
        wire.write(b"{}")
        await asyncio.sleep(0)
        return raw

    assert asyncio.run(main()).writes == [HEAD + b"{}"]


def test_a_head_alone_goes_out_at_the_next_turn_and_before_a_close():
    async def main() -> None:
        raw = Transport()
        wire = HeadWithBody(raw, asyncio.get_running_loop())
        wire.write(HEAD)
        await asyncio.sleep(0)
        assert raw.writes == [HEAD]
        wire.write(b"plain data\r\n\r\n")  # not a head: straight through
        wire.write(memoryview(b"a body as a buffer"))  # any buffer an application sends
        assert raw.writes == [HEAD, b"plain data\r\n\r\n", b"a body as a buffer"]
        wire.write(HEAD)
        wire.close()
        assert raw.writes[-1] == HEAD
        assert raw.closed
        assert wire.get_extra_info("peername") == ("127.0.0.1", 40000)

    asyncio.run(main())


def test_a_large_body_is_not_copied_behind_the_head():
    async def main() -> Transport:
        raw = Transport()
        wire = HeadWithBody(raw, asyncio.get_running_loop())
        wire.write(HEAD)
        wire.write(b"x" * MERGE_LIMIT)
        return raw

    assert [len(w) for w in asyncio.run(main()).writes] == [len(HEAD), MERGE_LIMIT]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"ok":true}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def test_uvicorn_answers_a_request_in_one_write():
    async def main() -> list[bytes]:
        config = uvicorn.Config(app, http=OneWriteHttpProtocol, lifespan="off", log_level="error")
        config.load()
        state = ServerState()
        protocol = OneWriteHttpProtocol(config=config, server_state=state, app_state={})
        raw = Transport()
        protocol.connection_made(raw)
        protocol.data_received(b"GET /x HTTP/1.1\r\nhost: nubes\r\n\r\n")
        await asyncio.gather(*state.tasks)
        await asyncio.sleep(0)
        return raw.writes

    writes = asyncio.run(main())
    assert len(writes) == 1
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == b'{"ok":true}'


def test_a_real_server_answers_through_it():
    async def main() -> bytes:
        config = uvicorn.Config(
            app, http=OneWriteHttpProtocol, lifespan="off", log_level="error", port=0
        )
        server = uvicorn.Server(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"GET /x HTTP/1.1\r\nhost: nubes\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(11)
        writer.close()
        server.should_exit = True
        await serving
        return head + body

    answer = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(b'{"ok":true}')
