"""The controller's HTTP/1.1 protocol: uvicorn's httptools protocol, each response's head and
body sent in one write.

uvicorn writes a response's status line and headers as soon as the application sends
``http.response.start``, then its body on ``http.response.body``: two ``send()`` calls, two
TCP segments, and on the client two wake-ups and two reads for one small JSON answer. In the
boot storm (six answers per boot and delete, 200 heartbeats a second) those writes were a
tenth of the controller's CPU. Here the head waits for the body, which an application sends
in the same step (Starlette's responses, :class:`nubes.api.agentface.lane.AgentLane`): then
both go in one write. A head with no body in that step (a streamed answer still being
produced) goes out alone at the loop's next turn, so nothing waits longer than that.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: a body at least this long goes in its own write rather than being copied behind the head
MERGE_LIMIT = 64 * 1024


class HeadWithBody:
    """A transport that holds a response head (``HTTP/…`` through its blank line) until the
    next write, or the loop's next turn, and sends the two together."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) < MERGE_LIMIT:
                self._transport.write(head + data)
                return
            self._transport.write(head)
            self._transport.write(data)
        elif isinstance(data, bytes) and data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


class OneWriteHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`HeadWithBody` transport (``http=`` of
    :class:`uvicorn.Config`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport, self.loop))  # type: ignore[arg-type]
