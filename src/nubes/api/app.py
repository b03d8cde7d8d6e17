"""The ASGI application: one port, path prefixes per face.

Middleware order (outermost first) is documented in :mod:`nubes.api.middleware`.
Routes: /v1 (native), /healthz, /metrics; the OpenStack, EC2 and OpenNebula faces will mount
under their own prefixes here.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

import nubes
from nubes.api import errors
from nubes.api.middleware import (
    BodyLimitMiddleware,
    Metrics,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from nubes.api.native import ROUTERS
from nubes.api.services import Services

DESCRIPTION = """The native nubes API. Authenticate with `POST /v1/auth/tokens`, then send the
token as `X-Auth-Token`. Errors are `{"error": {"code", "message", "request_id"}}` with stable
codes (docs/errors.md)."""


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="nubes",
        version=nubes.__version__,
        description=DESCRIPTION,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url="/v1/redoc",
    )
    app.state.services = services
    metrics = Metrics()
    app.state.metrics = metrics
    errors.install(app)
    for router in ROUTERS:
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
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
