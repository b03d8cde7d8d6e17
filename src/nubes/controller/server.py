"""Run the controller in this process (foreground) with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from nubes.api.app import create_app
from nubes.api.services import Services
from nubes.config import Settings


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    services = Services.build(settings)
    app = create_app(services)
    try:
        uvicorn.run(
            app,
            host=settings.listen_host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            server_header=False,
        )
    finally:
        services.db.dispose()
