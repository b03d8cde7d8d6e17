"""Hosts: an admin makes a join token; a node presents it, gets a name (node-N), a credential
and its configuration, and heartbeats. A host that misses heartbeats goes ``error``; one whose
agent says goodbye goes ``offline``; ``enabled`` (admin) decides whether it takes new
instances."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, Conflict, InvalidInput, NotAuthenticated, NotFound
from nubes.hosts import credentials
from nubes.hosts.probes import ProbeService, check_report
from nubes.identity import policy
from nubes.identity.core import IdentityCore
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.counters import next_value
from nubes.store.models import Host, HostJoinToken, Instance, new_id, utcnow
from nubes.store.query import paginate, table_of, taken

HEARTBEAT_SECONDS = 5
#: Missing this many heartbeats in a row puts a host in ``error``.
MISSED_HEARTBEATS = 6
#: A monitored host's heartbeat is written at most this often (its metrics with it).
WRITE_EVERY = 12.0
#: A verified host credential is trusted this long without reading the database again; a
#: host deleted through another controller is refused at most this much later.
AUTH_CACHE_SECONDS = 10.0
AUTH_CACHE_SIZE = 100_000
#: :meth:`HostService.revalidate_credentials` renews entries expiring within this: two passes
#: of the controller loop that runs it every 2 s
RENEW_WITHIN_SECONDS = 4.0
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


#: Bounds of the per-host (and per-aggregate) scheduling overrides.
RATIO_MAX = 1000.0
MAX_INSTANCES_MAX = 1_000_000
RATIO_FIELDS = ("cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio")
SETTING_FIELDS = (*RATIO_FIELDS, "max_instances")


def check_ratio(field: str, value: object) -> float:
    """An allocation ratio: a finite number in (0, RATIO_MAX]. Strings are accepted because
    aggregate metadata stores every value as text."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (0 < number <= RATIO_MAX):
        raise InvalidInput(f"{field}: a number > 0 and ≤ {RATIO_MAX:g}, not {value!r}")
    return number


def check_max_instances(field: str, value: object) -> int:
    """An instance cap: a whole number in [1, MAX_INSTANCES_MAX]."""
    number = value if isinstance(value, int) else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if isinstance(value, bool) or number is None or not 1 <= number <= MAX_INSTANCES_MAX:
        raise InvalidInput(f"{field}: a whole number ≥ 1 and ≤ {MAX_INSTANCES_MAX}, not {value!r}")
    return number


def _bump(row: Host) -> None:
    """The host's scheduling inputs changed (up/down, enabled): bump its generation in SQL,
    so a placement planned on the old state loses its compare-and-swap and re-reads."""
    row.generation = Host.generation + 1  # type: ignore[assignment]


def find_host(session: Session, ref: str) -> Host:
    row = session.get(Host, ref) or session.scalar(select(Host).where(Host.name == ref))
    if row is None:
        raise _not_found(ref)
    return row


class HostService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core
        #: credential → (trusted until, host as read then). Every agent request is
        #: authenticated; a thousand hosts would otherwise cost a database read each.
        self._verified: dict[str, tuple[float, Host]] = {}
        #: host id → (time, metrics, probe errors) of beats waiting for flush_heartbeats
        self._pending: dict[str, tuple[datetime, dict[str, Any], dict[str, str]]] = {}
        self.probes = ProbeService(core.db, core.settings.state_dir / "probes")

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
        now = time.monotonic()
        cached = self.cached(credential)
        if cached is not None:
            return cached
        parts = credentials.split(HOST_KIND, credential)
        if parts is None:
            raise refused
        with self.core.db.read() as session:
            host = session.get(Host, parts[0])
        if host is None or not _belongs(credential, host):
            raise refused
        if len(self._verified) >= AUTH_CACHE_SIZE:
            self._verified.clear()
        self._verified[credential] = (now + AUTH_CACHE_SECONDS, host)
        return host

    def revalidate_credentials(self) -> int:
        """Re-read, in one query, the hosts whose verified credentials would expire before
        the next pass (a controller loop runs this every few seconds), and keep those still
        valid for another AUTH_CACHE_SECONDS, with the host as it now is; drop the others
        (host deleted, credential changed). A thousand agents' credentials then cost one read
        every pass instead of a read per credential every AUTH_CACHE_SECONDS (100 a second):
        and a deleted host is still refused within AUTH_CACHE_SECONDS everywhere. Only the
        hosts whose ``updated_at`` moved are read whole: the others' rows are the ones held
        (every write of a host row moves it). Returns how many were kept."""
        soon = time.monotonic() + RENEW_WITHIN_SECONDS
        due = {c: hit[1] for c, hit in list(self._verified.items()) if hit[0] < soon}
        if not due:
            return 0
        with self.core.db.read() as session:
            held = {h.id: h for h in due.values()}
            stamps = session.execute(_STAMPS_OF, {"ids": list(held)}).all()
            hosts = {hid: held[hid] for hid, stamp in stamps if stamp == held[hid].updated_at}
            moved = [hid for hid, _ in stamps if hid not in hosts]
            if moved:
                hosts.update((h.id, h) for h in session.scalars(_HOSTS_OF, {"ids": moved}))
        until = time.monotonic() + AUTH_CACHE_SECONDS
        kept = 0
        for credential, old in due.items():
            host = hosts.get(old.id)
            if host is None or not _belongs(credential, host):
                self._verified.pop(credential, None)
            else:
                self._verified[credential] = (until, host)
                kept += 1
        return kept

    def cached(self, credential: str) -> Host | None:
        """The host of a credential verified within AUTH_CACHE_SECONDS (no I/O), or None."""
        hit = self._verified.get(credential)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

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

    def heartbeat(
        self,
        host: Host,
        metrics: dict[str, Any],
        *,
        leaving: bool = False,
        probe_errors: dict[str, str] | None = None,
    ) -> None:
        """Record a heartbeat and its metrics (see :meth:`beat_in_memory` for the common case,
        which needs no database)."""
        errors = probe_errors or {}
        if self.beat_in_memory(host, metrics, leaving=leaving, probe_errors=errors):
            return
        now = utcnow()
        state = "offline" if leaving else "monitored"
        with self.core.db.transaction() as session:
            row = session.get(Host, host.id)
            if row is None:
                raise _not_found(host.id)
            if row.state != state:
                _bump(row)
                events.record(
                    session,
                    RequestContext.system(),
                    f"host.{state}",
                    "host",
                    row.id,
                    payload={"from": row.state},
                )
            row.state, row.last_seen, row.error = state, now, ""
            if not leaving:
                row.metrics, row.probe_errors, row.metrics_at = metrics, errors, now
        self._pending.pop(host.id, None)
        self._remember(host, state, now, None if leaving else (metrics, errors))

    def beat_in_memory(
        self,
        host: Host,
        metrics: dict[str, Any],
        *,
        leaving: bool = False,
        probe_errors: dict[str, str] | None = None,
    ) -> bool:
        """Take a beat without the database when it changes nothing anyone must see at once:
        the host is ``monitored`` and reports the same metric names and probe errors. A
        recent one is dropped; one due (every ``WRITE_EVERY`` s) is queued, and
        :meth:`flush_heartbeats` writes the queue in one transaction. At 5 s a beat, a
        thousand hosts would otherwise cost 200 transactions a second, or 83 coalesced.
        ``last_seen`` in the database is at most ``WRITE_EVERY`` + a flush period old. False:
        the caller must write now (a state change, a reshaped report, a leaving agent)."""
        errors = probe_errors or {}
        check_report(metrics, errors)
        if leaving or host.state != "monitored" or host.last_seen is None:
            return False
        if set(metrics) != set(host.metrics or {}) or set(errors) != set(host.probe_errors or {}):
            return False
        now = utcnow()
        if (now - host.last_seen).total_seconds() >= WRITE_EVERY:
            self._pending[host.id] = (now, metrics, errors)
            self._remember(host, "monitored", now, (metrics, errors))
        return True

    def flush_heartbeats(self) -> int:
        """Write queued heartbeats, all in one transaction; returns how many."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        table = table_of(Host)
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.state == "monitored")
            .values(
                last_seen=bindparam("b_seen"),
                metrics=bindparam("b_metrics"),
                probe_errors=bindparam("b_errors"),
                metrics_at=bindparam("b_seen"),
                updated_at=bindparam("b_seen"),
            )
        )
        # in id order, as the host monitor (the ORM flushes by primary key) and claims take
        # hosts: in the order the beats came, two workers' flush and monitor deadlocked on
        # PostgreSQL
        rows = [
            {"b_id": hid, "b_seen": seen, "b_metrics": metrics, "b_errors": errors}
            for hid, (seen, metrics, errors) in sorted(pending.items())
        ]
        with self.core.db.transaction() as session:
            written = session.connection().execute(statement, rows).rowcount
            behind: set[str] = set()
            if written != len(rows):
                # another worker or controller moved some (to error: their beats came to us
                # late); forget our copies, so the next beat writes and brings them back
                behind = set(
                    session.scalars(
                        select(Host.id).where(Host.id.in_(pending), Host.state != "monitored")
                    )
                )
        if behind:
            self._forget(behind)
        return len(rows)

    @staticmethod
    def _remember(
        host: Host,
        state: str,
        now: datetime,
        report: tuple[dict[str, Any], dict[str, str]] | None,
    ) -> None:
        """``host`` may be the credential cache's copy: keep it true to what was recorded, or
        the next beats would compare against a stale state and write every time."""
        host.state, host.last_seen, host.error = state, now, ""
        if report is not None:
            host.metrics, host.probe_errors = report
            host.metrics_at = now

    def check_heartbeats(self) -> list[str]:
        """Put hosts that missed heartbeats in ``error``; returns their names."""
        limit = utcnow() - timedelta(seconds=HEARTBEAT_SECONDS * MISSED_HEARTBEATS)
        lost: list[str] = []
        lost_ids: set[str] = set()
        with self.core.db.transaction() as session:
            for row in session.scalars(
                select(Host).where(Host.state.in_(("monitored", "init")), Host.last_seen < limit)
            ):
                row.state = "error"
                _bump(row)
                row.error = (
                    f"no heartbeat since {row.last_seen.isoformat() if row.last_seen else 'ever'}"
                )
                lost.append(row.name)
                lost_ids.add(row.id)
                events.record(
                    session,
                    RequestContext.system(),
                    "host.error",
                    "host",
                    row.id,
                    payload={"reason": row.error},
                )
        if lost_ids:  # their cached copies say "monitored": the next beat must write
            self._forget(lost_ids)
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
            _bump(row)
            events.record(
                session,
                ctx,
                "host.enabled" if enabled else "host.disabled",
                "host",
                row.id,
                payload={"reason": reason},
            )
            return row

    def update_settings(
        self, ctx: RequestContext, ref: str, changes: Mapping[str, float | int | None]
    ) -> Host:
        """Override a host's allocation ratios or instance cap; None clears an override (the
        host inherits again: its aggregates, then the cloud default). The generation is bumped,
        so a placement that read the old values loses its claim and re-reads."""
        policy.enforce(ctx, "hosts:host:update")
        unknown = sorted(set(changes) - set(SETTING_FIELDS))
        if unknown or not changes:
            raise InvalidInput(
                f"settings: give one or more of {', '.join(SETTING_FIELDS)}"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        values: dict[str, float | int | None] = {}
        for field, value in changes.items():
            if value is None:
                values[field] = None
            elif field == "max_instances":
                values[field] = check_max_instances(field, value)
            else:
                values[field] = check_ratio(field, value)
        with self.core.db.transaction() as session:
            row = find_host(session, ref)
            compare_and_swap(session, Host, row.id, row.generation, values)
            session.refresh(row)
            events.record(session, ctx, "host.settings_changed", "host", row.id, payload=values)
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
        self._forget({row.id})

    def _forget(self, host_ids: set[str]) -> None:
        """Drop cached credentials of these hosts (deleted, or changed behind their copy)."""
        self._verified = {k: v for k, v in self._verified.items() if v[1].id not in host_ids}

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


_STAMPS_OF = select(Host.id, Host.updated_at).where(Host.id.in_(bindparam("ids", expanding=True)))
_HOSTS_OF = select(Host).where(Host.id.in_(bindparam("ids", expanding=True)))


def _belongs(credential: str, host: Host) -> bool:
    """Whether ``credential`` is ``host``'s (its secret matches the stored hash)."""
    parts = credentials.split(HOST_KIND, credential)
    return (
        parts is not None
        and parts[0] == host.id
        and credentials.matches(parts[1], host.credential_hash)
    )
