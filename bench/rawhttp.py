"""A minimal HTTP/1.1 keep-alive JSON client for simulating many hosts in one process.

httpx spends more CPU per request than the controller spends answering it (its pool scans
every connection on each request, and it asks sniffio which async library runs, by import,
every time): a thousand simulated hosts on httpx measure the simulator, not the controller.
This speaks just enough HTTP for the controller's JSON answers: one request at a time per
connection, Content-Length or chunked bodies, reconnect when the server closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


class RawHttp:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        timeout: float = 60.0,
    ) -> tuple[int, Any]:
        """(status, decoded JSON or None). One retry on a connection the server had closed."""
        async with self._lock:
            for attempt in (1, 2):
                try:
                    return await asyncio.wait_for(
                        self._exchange(method, path, headers or {}, body), timeout
                    )
                except (ConnectionError, asyncio.IncompleteReadError, HttpError) as exc:
                    await self.close()
                    if attempt == 2:
                        raise HttpError(f"{method} {path}: {exc!r}") from exc
                except TimeoutError:
                    await self.close()
                    raise
        raise AssertionError("unreachable")

    async def _exchange(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines.append(f"Content-Length: {len(payload)}")
        if body is not None:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        status_line = await self._reader.readline()
        if not status_line:
            raise HttpError("connection closed")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
        data = await self._read_chunked() if chunked else await self._reader.readexactly(length)
        if close:
            await self.close()
        return status, json.loads(data) if data else None

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        out = bytearray()
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            chunk = await self._reader.readexactly(size + 2)
            if size == 0:
                return bytes(out)
            out += chunk[:-2]
