"""The ASGI application: one port, path prefixes per face.

Middleware order (outermost first) is documented in :mod:`nubes.api.middleware`.
Routes: /v1 (native), /healthz, /metrics; the OpenStack, EC2 and OpenNebula faces will mount
under their own prefixes here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

import nubes
from nubes.api import agentface, errors
from nubes.api.agentface.lane import AgentLane
from nubes.api.middleware import (
    BodyLimitMiddleware,
    Metrics,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from nubes.api.native import ROUTERS
from nubes.api.services import Services

log = logging.getLogger("nubes.api")

DESCRIPTION = """The native nubes API. Authenticate with `POST /v1/auth/tokens`, then send the
token as `X-Auth-Token`. Errors are `{"error": {"code", "message", "request_id"}}` with stable
codes (docs/errors.md)."""


LOOP_SECONDS = 2.0


async def _run_loops(services: Services) -> None:
    """The controller's own loops: hosts that missed heartbeats go to error, overdue
    instance tasks go to error, SQLite's log is checkpointed outside the write turn.
    Idempotent and cheap, so every controller may run them."""
    loops: dict[str, Callable[[], object]] = {
        "heartbeat-writer": services.hosts.flush_heartbeats,
        "host-monitor": services.hosts.check_heartbeats,
        "host-credentials": services.hosts.revalidate_credentials,
        "task-deadlines": services.instances.expire_tasks,
        "wal-checkpoint": services.db.checkpoint,
    }
    while True:
        for name, step in loops.items():
            try:
                await asyncio.to_thread(step)
                services.loops[name] = time.time()
            except Exception:
                log.exception("controller loop %s failed; retrying", name)
        await asyncio.sleep(LOOP_SECONDS)


class HostMetricsCollector(Collector):
    """Every monitored host's last metrics, read from the database at scrape time (not kept
    in this process): controllers sharing a database all answer the same."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        values = GaugeMetricFamily(
            "nubes_host_metric",
            "A host's last reported metric (built-in or probe; docs/probes.md)",
            labels=["host", "metric"],
        )
        errors = GaugeMetricFamily(
            "nubes_host_probe_errors", "Probes that failed on a host's last run", labels=["host"]
        )
        for host in self.services.hosts.probes.monitored():
            for name, value in sorted(host.metrics.items()):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values.add_metric([host.name, name], float(value))
            errors.add_metric([host.name], len(host.probe_errors))
        yield values
        yield errors


def create_app(services: Services, *, run_loops: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        services.notifier.listen(loop)
        task = asyncio.create_task(_run_loops(services)) if run_loops else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        services.notifier.close(loop)

    app = FastAPI(
        lifespan=lifespan,
        title="nubes",
        version=nubes.__version__,
        description=DESCRIPTION,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url="/v1/redoc",
    )
    app.state.services = services
    metrics = Metrics()
    metrics.registry.register(HostMetricsCollector(services))
    app.state.metrics = metrics
    errors.install(app)
    # FastAPI tries routes in order, each a regular expression: the agents' (a thousand hosts
    # beat, poll and report) and the servers' come first, and skip trying the other hundred.
    app.include_router(agentface.router)
    for router in sorted(ROUTERS, key=lambda r: r.prefix != "/v1/servers"):
        app.include_router(router)

    @app.get("/healthz", response_class=PlainTextResponse, tags=["health"])
    def healthz() -> str:
        """ "ok" when the controller can reach its database; 503 otherwise."""
        with services.db.read() as session:
            session.execute(text("SELECT 1"))
        return "ok"

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(AgentLane, services=services)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=services.settings.max_body_bytes,
        exempt=r"^/v1/images/[^/]+/file$",
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
