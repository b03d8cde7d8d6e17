"""The native REST API v1: every route in ``ROUTERS`` (one module per resource)."""

from nubes.api.native import (
    auth,
    credentials,
    flavors,
    keypairs,
    projects,
    quotas,
    roles,
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
    status.router,
]
