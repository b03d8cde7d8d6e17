"""What every networking service shares besides lookups: deletes that a concurrent reference
turns into a 409 rather than a 500."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.errors import Conflict
from nubes.identity.core import IdentityCore

#: device_owner values nubes gives its own ports; users may not set or delete these.
DHCP = "network:dhcp"
ROUTER_INTERFACE = "network:router_interface"
ROUTER_GATEWAY = "network:router_gateway"
FLOATING_IP = "network:floatingip"
COMPUTE = "compute"
RESERVED_PREFIX = "network:"


def guarded_delete(session: Session, stmt: Any, conflict: Conflict) -> int:
    """Run a DELETE inside a savepoint. On PostgreSQL a row referenced by another transaction
    a moment ago (a port joining a security group, a port made on a network) fails the foreign
    key only when the DELETE runs; that is the caller's ``conflict``, not a server error."""
    try:
        with session.begin_nested():
            result: Any = session.execute(stmt.execution_options(synchronize_session=False))
    except IntegrityError:
        raise conflict from None
    return int(result.rowcount)


class Service:
    """A networking service: the identity core (database, settings) it works through."""

    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    @property
    def settings(self) -> Settings:
        return self.core.settings
