"""The native REST API v1: every route in ``ROUTERS`` (one module per resource)."""

from nubes.api.native import (
    auth,
    credentials,
    flavors,
    hosts,
    images,
    keypairs,
    projects,
    quotas,
    roles,
    servers,
    status,
    users,
)

ROUTERS = [
    auth.router,
    projects.router,
    users.router,
    roles.router,
    credentials.router,
    quotas.router,
    flavors.router,
    keypairs.router,
    hosts.router,
    images.router,
    servers.router,
    status.router,
]
