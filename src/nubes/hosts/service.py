"""Hosts: an admin makes a join token; a node presents it, gets a name (node-N), a credential
and its configuration, and heartbeats. A host that misses heartbeats goes ``error``; one whose
agent says goodbye goes ``offline``; ``enabled`` (admin) decides whether it takes new
instances."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, Conflict, InvalidInput, NotAuthenticated, NotFound
from nubes.hosts import credentials
from nubes.identity import policy
from nubes.identity.core import IdentityCore
from nubes.store import events
from nubes.store.counters import next_value
from nubes.store.models import Host, HostJoinToken, Instance, new_id, utcnow
from nubes.store.query import paginate, taken

HEARTBEAT_SECONDS = 5
#: Missing this many heartbeats in a row puts a host in ``error``.
MISSED_HEARTBEATS = 6
#: A monitored host's heartbeat is written at most this often (its metrics with it).
WRITE_EVERY = 12.0
JOIN_KIND = "join"
HOST_KIND = "host"


@dataclass(frozen=True)
class JoinToken:
    token: str
    id: str
    uses: int
    expires_at: datetime


@dataclass(frozen=True)
class Joined:
    host: Host
    credential: str
    config: dict[str, Any]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    host: str
    kind: str
    state: str  # up | down
    last_seen: datetime | None
    detail: str


def _not_found(ref: str) -> NotFound:
    return NotFound(f"no host {ref!r}", code="nubes.host.not_found")


def find_host(session: Session, ref: str) -> Host:
    row = session.get(Host, ref) or session.scalar(select(Host).where(Host.name == ref))
    if row is None:
        raise _not_found(ref)
    return row


class HostService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    # joining ------------------------------------------------------------------------------

    def create_join_token(
        self, ctx: RequestContext, *, uses: int = 1, ttl_seconds: int = 3600
    ) -> JoinToken:
        policy.enforce(ctx, "hosts:join_token:create")
        if uses < 1 or ttl_seconds < 1:
            raise InvalidInput("uses and expires: must be positive")
        row = HostJoinToken(
            id=new_id(),
            uses_left=uses,
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
            created_by=ctx.user_id,
        )
        token, row.secret_hash = credentials.make(JOIN_KIND, row.id)
        with self.core.db.transaction() as session:
            session.add(row)
            events.record(session, ctx, "host.join_token_created", "join_token", row.id)
        return JoinToken(token, row.id, uses, row.expires_at)

    def join(
        self,
        token: str,
        *,
        name: str | None,
        address: str,
        driver: str,
        capabilities: dict[str, Any],
        vcpus: int,
        ram_mb: int,
        disk_gb: int,
        arch: str,
    ) -> Joined:
        """Register a node. A node that already joined re-joins with its host credential
        (see :meth:`rejoin`); a join token is spent once per new host."""
        refused = NotAuthenticated(
            "join refused: the token is wrong, used up or expired; make one with "
            "`nubes host token create`",
            code="nubes.host.join_refused",
        )
        parts = credentials.split(JOIN_KIND, token)
        if parts is None:
            raise refused
        token_id, secret = parts
        ctx = RequestContext.system()
        with self.core.db.transaction() as session:
            row = session.get(HostJoinToken, token_id)
            if row is None or not credentials.matches(secret, row.secret_hash):
                raise refused
            if row.expires_at <= datetime.now(UTC) or row.uses_left < 1:
                raise refused
            spent = session.execute(
                update(HostJoinToken)
                .where(HostJoinToken.id == token_id, HostJoinToken.uses_left >= 1)
                .values(uses_left=HostJoinToken.uses_left - 1)
                .execution_options(synchronize_session=False)
            )
            if spent.rowcount != 1:  # type: ignore[attr-defined]
                raise refused
            if name is not None:
                if taken(session, Host.name, name):
                    raise AlreadyExists(f"a host named {name!r} exists", code="nubes.host.exists")
            else:
                name = f"node-{next_value(session, 'host')}"
                while taken(session, Host.name, name):
                    name = f"node-{next_value(session, 'host')}"
            host = Host(
                id=new_id(),
                name=name,
                address=address,
                driver=driver,
                capabilities=capabilities,
                vcpus=vcpus,
                ram_mb=ram_mb,
                disk_gb=disk_gb,
                arch=arch,
                credential_hash="",
            )
            credential, host.credential_hash = credentials.make(HOST_KIND, host.id)
            session.add(host)
            session.flush()
            events.record(session, ctx, "host.joined", "host", host.id, payload={"name": name})
            return Joined(host, credential, self.agent_config())

    def agent_config(self) -> dict[str, Any]:
        return {"heartbeat_seconds": HEARTBEAT_SECONDS, "watch_seconds": 25}

    def authenticate(self, credential: str) -> Host:
        refused = NotAuthenticated(
            "host credential refused (was the host deleted? join again with a new token)",
            code="nubes.host.unauthenticated",
        )
        parts = credentials.split(HOST_KIND, credential)
        if parts is None:
            raise refused
        with self.core.db.read() as session:
            host = session.get(Host, parts[0])
        if host is None or not credentials.matches(parts[1], host.credential_hash):
            raise refused
        return host

    def rejoin(
        self,
        host: Host,
        *,
        address: str,
        driver: str,
        capabilities: dict[str, Any],
        vcpus: int,
        ram_mb: int,
        disk_gb: int,
        arch: str,
    ) -> Joined:
        """A restarted agent keeps its identity; its capabilities are refreshed."""
        with self.core.db.transaction() as session:
            row = session.get(Host, host.id)
            if row is None:
                raise _not_found(host.id)
            row.address, row.driver, row.capabilities = address, driver, capabilities
            row.vcpus, row.ram_mb, row.disk_gb, row.arch = vcpus, ram_mb, disk_gb, arch
            events.record(session, RequestContext.system(), "host.rejoined", "host", row.id)
            return Joined(row, "", self.agent_config())

    def heartbeat(self, host: Host, metrics: dict[str, Any], *, leaving: bool = False) -> None:
        """Record a heartbeat. A host already ``monitored`` whose last recorded heartbeat is
        recent is not written again: at 5 s a beat, a thousand hosts would otherwise cost 200
        writes a second for nothing. ``last_seen`` is at most ``WRITE_EVERY`` seconds old."""
        now = utcnow()
        state = "offline" if leaving else "monitored"
        if (
            state == "monitored"
            and host.state == "monitored"
            and host.last_seen is not None
            and (now - host.last_seen).total_seconds() < WRITE_EVERY
        ):
            return
        with self.core.db.transaction() as session:
            row = session.get(Host, host.id)
            if row is None:
                raise _not_found(host.id)
            if row.state != state:
                events.record(
                    session,
                    RequestContext.system(),
                    f"host.{state}",
                    "host",
                    row.id,
                    payload={"from": row.state},
                )
            row.state, row.metrics, row.last_seen, row.error = state, metrics, now, ""

    def check_heartbeats(self) -> list[str]:
        """Put hosts that missed heartbeats in ``error``; returns their names."""
        limit = utcnow() - timedelta(seconds=HEARTBEAT_SECONDS * MISSED_HEARTBEATS)
        lost: list[str] = []
        with self.core.db.transaction() as session:
            for row in session.scalars(
                select(Host).where(Host.state.in_(("monitored", "init")), Host.last_seen < limit)
            ):
                row.state = "error"
                row.error = (
                    f"no heartbeat since {row.last_seen.isoformat() if row.last_seen else 'ever'}"
                )
                lost.append(row.name)
                events.record(
                    session,
                    RequestContext.system(),
                    "host.error",
                    "host",
                    row.id,
                    payload={"reason": row.error},
                )
        return lost

    # administration -----------------------------------------------------------------------

    def list_hosts(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Host]:
        policy.enforce(ctx, "hosts:host:list")
        stmt = select(Host)
        if name is not None:
            stmt = stmt.where(Host.name == name)
        with self.core.db.read() as session:
            return paginate(session, stmt, Host, limit=limit, marker=marker, sort_column=Host.name)

    def get(self, ctx: RequestContext, ref: str) -> Host:
        policy.enforce(ctx, "hosts:host:show")
        with self.core.db.read() as session:
            return find_host(session, ref)

    def set_enabled(self, ctx: RequestContext, ref: str, enabled: bool, reason: str = "") -> Host:
        policy.enforce(ctx, "hosts:host:update")
        with self.core.db.transaction() as session:
            row = find_host(session, ref)
            row.enabled, row.disabled_reason = enabled, "" if enabled else reason
            events.record(
                session,
                ctx,
                "host.enabled" if enabled else "host.disabled",
                "host",
                row.id,
                payload={"reason": reason},
            )
            return row

    def delete(self, ctx: RequestContext, ref: str) -> None:
        policy.enforce(ctx, "hosts:host:delete")
        with self.core.db.transaction() as session:
            row = find_host(session, ref)
            busy = session.scalar(
                select(func.count())
                .select_from(Instance)
                .where(Instance.host_id == row.id, Instance.state != "deleted")
            )
            if busy:
                raise Conflict(
                    f"host {row.name!r} still has {busy} instance(s); delete them first",
                    code="nubes.host.in_use",
                )
            session.delete(row)
            events.record(session, ctx, "host.deleted", "host", row.id, payload={"name": row.name})

    def services(self, ctx: RequestContext, loops: dict[str, float]) -> list[ServiceStatus]:
        """The controller's loops (name → time of last successful run) and every agent, each
        up or down: down when not heard of for MISSED_HEARTBEATS beats."""
        policy.enforce(ctx, "hosts:service:list")
        now = utcnow()
        stale = timedelta(seconds=HEARTBEAT_SECONDS * MISSED_HEARTBEATS)
        rows = []
        for name, last in sorted(loops.items()):
            seen = datetime.fromtimestamp(last, UTC)
            up = now - seen < stale
            rows.append(
                ServiceStatus(
                    name, "controller", "controller-loop", "up" if up else "down", seen, ""
                )
            )
        for host in self.list_hosts(ctx):
            up = (
                host.state == "monitored"
                and host.last_seen is not None
                and now - host.last_seen < stale
            )
            detail = host.error or ("" if host.enabled else f"disabled {host.disabled_reason}")
            rows.append(
                ServiceStatus(
                    "agent", host.name, host.driver, "up" if up else "down", host.last_seen, detail
                )
            )
        return rows
