"""ASGI middleware, composed in one place (``nubes.api.app.create_app``), outermost first:

1. :class:`RequestIdMiddleware` gives every request an id and every response ``X-Request-Id``
   (including errors raised further in);
2. :class:`MetricsMiddleware` counts and times requests per route template for /metrics;
3. :class:`BodyLimitMiddleware` refuses bodies over the limit with 413 before they are read
   whole, whether announced by Content-Length or streamed chunked.

Pure ASGI (no BaseHTTPMiddleware): cheap, and streaming-safe.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_RE = re.compile(r"^req-[0-9a-f-]{36}$")


def _header(scope: Scope, name: bytes) -> bytes:
    """A request header's value (the first, if repeated), or b"": ASGI lowercases names."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return b""


def new_request_id() -> str:
    """``req-`` and a random UUID. Ids tie log lines together and are no secret: drawn from
    the process's generator, not the kernel's (one system call per request saved)."""
    return f"req-{uuid.UUID(int=_ids.getrandbits(128), version=4)}"


_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # a forked worker draws its own ids


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id").decode("latin-1")
        # Accept a caller's id only in our own format, so logs cannot be forged or flooded.
        request_id = incoming if REQUEST_ID_RE.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nubes_http_requests",
            "HTTP requests handled, by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nubes_http_request_duration_seconds",
            "HTTP request latency, by method and route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (scope.get("method", ""), template, status["code"])
            found = self._children.get(key)
            if found is None:  # labels() checks and locks: once per method, route and status
                method, _, code = key
                found = self._children[key] = (
                    self.metrics.requests.labels(method, template, str(code)),
                    self.metrics.latency.labels(method, template),
                )
            found[0].inc()
            found[1].observe(time.perf_counter() - start)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, exempt: str = r"^$") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = re.compile(exempt)  # uploads that stream to disk with their own limit

    async def _refuse(self, scope: Scope, send: Send) -> None:
        request_id = scope.get("state", {}).get("request_id", "")
        body = json.dumps(
            {
                "error": {
                    "code": "nubes.request.too_large",
                    "message": f"request body larger than {self.max_bytes} bytes",
                    "request_id": request_id,
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body parsing; the one error
                    # mapper (nubes.api.errors) renders it as nubes.request.too_large.
                    raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)
