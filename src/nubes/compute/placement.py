"""Placement: the scheduler's snapshot of the hosts, and committing its plans.

The scheduler (:mod:`nubes.scheduler`) is a pure function over an immutable snapshot. This
module keeps one snapshot per controller process, refreshed from the hosts changed since it
last looked (``hosts.updated_at``) at most every ``scheduler.refresh_seconds`` and whenever a
claim loses a race; claims made here go into it without a read. A plan is committed with a
compare-and-swap on each chosen host's generation (Placement's trick): a claim computed from
a stale snapshot (another controller's claim, a host disabled or moved to another zone — all
bump the generation) fails, the snapshot is refreshed and the rest of the batch replanned. So
a host is never overbooked, and the common case costs no host read at all. So does a
release: it returns what it wrote (:class:`HostChange`), which the caller hands to the
snapshot once committed, so the next claim on that host does not lose its compare-and-swap.
Claims and releases wait in the snapshot and go into it together at its next use: rebuilding
its columns costs more than a claim.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.errors import GenerationConflict
from nubes.hosts.aggregates import HostSchedulingSettings, effective_settings
from nubes.scheduler import Config, HostView, NoFit, Placement, Request, Snapshot, schedule
from nubes.store.cas import compare_and_swap
from nubes.store.models import Host, utcnow
from nubes.store.query import table_of

MAX_ATTEMPTS = 8
#: Rows changed this long before the newest change already seen are read again: a transaction
#: may commit after one that started later (updated_at is the writer's clock, not the commit's).
REFRESH_OVERLAP = timedelta(seconds=2)

_STAMPS_SINCE = select(Host.id, Host.updated_at, Host.generation).where(
    Host.updated_at >= bindparam("since")
)
_HOST_COLUMNS = (
    Host.id,
    Host.name,
    Host.state,
    Host.enabled,
    Host.driver,
    Host.arch,
    Host.vcpus,
    Host.ram_mb,
    Host.disk_gb,
    Host.allocated_vcpus,
    Host.allocated_ram_mb,
    Host.allocated_disk_gb,
    Host.capabilities,
    Host.metrics,
    Host.instance_count,
    Host.generation,
    Host.updated_at,
)


def scheduler_config(settings: Settings, tie_start: float = 0.0) -> Config:
    s = settings.scheduler
    return Config(
        weigher=s.weigher,
        rank_weight=s.rank_weight,
        ram_weight=s.ram_weight,
        cpu_weight=s.cpu_weight,
        disk_weight=s.disk_weight,
        load_weight=s.load_weight,
        soft_affinity_weight=s.soft_affinity_weight,
        default_max_instances=s.max_instances_per_host,
        tie_start=tie_start,
    )


def _view(row: Any, scheduling: HostSchedulingSettings) -> HostView:
    capabilities = row.capabilities or {}
    return HostView(
        id=row.id,
        name=row.name,
        state=row.state,
        enabled=row.enabled,
        driver=row.driver,
        arch=row.arch,
        zone=scheduling.zone,
        aggregates=scheduling.aggregates,
        aggregate_metadata=scheduling.metadata,
        vcpus=row.vcpus,
        ram_mb=row.ram_mb,
        disk_gb=row.disk_gb,
        allocated_vcpus=row.allocated_vcpus,
        allocated_ram_mb=row.allocated_ram_mb,
        allocated_disk_gb=row.allocated_disk_gb,
        cpu_ratio=scheduling.cpu_allocation_ratio,
        ram_ratio=scheduling.ram_allocation_ratio,
        disk_ratio=scheduling.disk_allocation_ratio,
        image_kinds=frozenset(capabilities.get("image_kinds", ())),
        accelerated=bool(capabilities.get("accelerated", False)),
        metrics=row.metrics or {},
        instances=row.instance_count,
        max_instances=scheduling.max_instances,
        generation=row.generation,
    )


class HostSnapshots:
    """This process's snapshot of every host, for the scheduler. Thread-safe: snapshots are
    immutable and swapped whole."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._snapshot = Snapshot.build(())
        self._newest: datetime | None = None  # the newest updated_at read so far
        #: each host's updated_at and generation as last read: a row changed within
        #: REFRESH_OVERLAP but not since is not read (nor its JSON decoded) again
        self._stamps: dict[str, tuple[datetime, int]] = {}
        self._read_at = 0.0  # monotonic time of the last refresh
        #: this process's claims and releases not yet in the snapshot, in order: merged at
        #: its next use, one rebuild of its columns for all (a rebuild costs more than a claim)
        self._pending: list[HostChange] = []
        self._refreshing = threading.Lock()  # held by the one thread refreshing

    def current(
        self, session: Session, *, fresh: bool = False, reread: Iterable[str] = ()
    ) -> Snapshot:
        """The snapshot, refreshed first when older than ``refresh_seconds`` (unless another
        thread is at it: a claim from a stale snapshot loses its compare-and-swap and comes
        back ``fresh``) or ``fresh``; the hosts in ``reread`` are read again by id whatever
        their ``updated_at`` says."""
        if fresh:
            self.refresh(session)
        elif self.due():
            self.prefetch(lambda: contextlib.nullcontext(session))
        self.settle()
        ids = sorted(set(reread))
        if ids:
            rows = session.execute(select(*_HOST_COLUMNS).where(Host.id.in_(ids))).all()
            scheduling = effective_settings(session, self.settings, ids)
            views = [_view(row, scheduling[row.id]) for row in rows if row.id in scheduling]
            with self._lock:
                self._snapshot = self._snapshot.updated(views, ())
        return self._snapshot

    def due(self) -> bool:
        return time.monotonic() - self._read_at >= self.settings.scheduler.refresh_seconds

    def prefetch(self, read: Callable[[], AbstractContextManager[Session]]) -> None:
        """Refresh if due and no other thread is refreshing, reading in ``read()``: a create
        calls it before its write transaction, so the write lock is not held while the hosts
        changed since the last look (every heartbeat flush changes some) are read."""
        if not self.due() or not self._refreshing.acquire(blocking=False):
            return
        try:
            if self.due():
                with read() as session:
                    self.refresh(session)
        finally:
            self._refreshing.release()

    def settle(self) -> None:
        """Bring this process's pending claims and releases into the snapshot now: a create
        calls it before its write turn, so the turn is not spent rebuilding columns."""
        if self._pending:
            with self._lock:
                self._merge()

    def refresh(self, session: Session) -> Snapshot:
        """Read the hosts changed since the last look (all of them the first time, or when
        one was deleted), then bring them in; the snapshot stays usable while reading."""
        newest, known = self._newest, self._snapshot.table.index.keys()
        rows: Sequence[Any] = []
        full = newest is None
        if newest is not None:
            since = newest - REFRESH_OVERLAP
            stamps = session.execute(_STAMPS_SINCE, {"since": since}).all()
            total = session.scalar(select(func.count()).select_from(Host)) or 0
            # a host deleted (by anyone) leaves no changed row behind: then read them all
            full = len(known | {s.id for s in stamps}) != total
            seen = self._stamps
            changed = [s.id for s in stamps if seen.get(s.id) != (s.updated_at, s.generation)]
            if changed and not full:  # (full: all are read below)
                rows = session.execute(select(*_HOST_COLUMNS).where(Host.id.in_(changed))).all()
        if full:
            rows = session.execute(select(*_HOST_COLUMNS)).all()
        scheduling = effective_settings(
            session, self.settings, None if full else [r.id for r in rows]
        )
        views = [_view(row, scheduling[row.id]) for row in rows if row.id in scheduling]
        with self._lock:
            # the rows first, then this process's writes still pending: each goes only onto
            # the version it was made from, so one the rows already show is skipped
            if full:
                self._snapshot = Snapshot.build(views)
                self._stamps = {}
            self._stamps.update((row.id, (row.updated_at, row.generation)) for row in rows)
            if views and not full:
                self._snapshot = self._snapshot.updated(views, ())
            self._merge()
            if rows:
                newest = max(row.updated_at for row in rows)
                self._newest = newest if self._newest is None else max(self._newest, newest)
            elif full:
                self._newest = datetime(2000, 1, 1, tzinfo=UTC)  # no hosts yet
            self._read_at = time.monotonic()
            return self._snapshot

    def claimed(self, views: Iterable[HostView]) -> None:
        """Note claims this process made (so the next plan sees them unread)."""
        with self._lock:
            self._pending.extend(HostChange.of(view) for view in views)

    def applied(self, changes: Iterable[HostChange]) -> None:
        """Note committed writes of this process (releases), for the next plan."""
        with self._lock:
            self._pending.extend(changes)

    def _merge(self) -> None:
        """Bring the pending writes into the snapshot (the lock held), each only onto the very
        version it was made from: otherwise the snapshot misses some other change too, and a
        claim's compare-and-swap on it fails and has the host read again, as it would have."""
        views: dict[str, HostView] = {}
        for change in self._pending:
            view = views.get(change.host_id) or self._snapshot.host(change.host_id)
            if view is not None and view.generation == change.generation - 1:
                views[change.host_id] = replace(
                    view,
                    allocated_vcpus=change.allocated_vcpus,
                    allocated_ram_mb=change.allocated_ram_mb,
                    allocated_disk_gb=change.allocated_disk_gb,
                    instances=change.instance_count,
                    generation=change.generation,
                )
        self._pending.clear()
        if views:
            self._snapshot = self._snapshot.updated(views.values(), ())

    def forget(self) -> None:
        """Drop everything: the next use reads every host (after a rollback, say)."""
        with self._lock:
            self._snapshot, self._newest, self._read_at = Snapshot.build(()), None, 0.0
            self._stamps = {}
            self._pending.clear()


@dataclass(frozen=True)
class HostChange:
    """A host's allocations as one write of this process left them, at ``generation``."""

    host_id: str
    generation: int
    allocated_vcpus: int
    allocated_ram_mb: int
    allocated_disk_gb: int
    instance_count: int

    @classmethod
    def of(cls, view: HostView) -> HostChange:
        return cls(
            view.id,
            view.generation,
            view.allocated_vcpus,
            view.allocated_ram_mb,
            view.allocated_disk_gb,
            view.instances,
        )


@dataclass(frozen=True)
class Outcome:
    """Where each instance of a batch goes: a placement, or None with ``unplaced``'s reason."""

    placements: tuple[Placement | None, ...]
    unplaced: NoFit | None = None


def claim(session: Session, snapshots: HostSnapshots, request: Request, config: Config) -> Outcome:
    """Plan ``request`` and commit it, host by host, in the caller's transaction. Instances
    the cloud cannot take come back as None, with the explanation."""
    placed: list[Placement] = []
    fresh = False
    lost: set[str] = set()
    conflicts = 0
    for _ in range(MAX_ATTEMPTS):
        snapshot = snapshots.current(session, fresh=fresh, reread=lost)
        remaining = request.count - len(placed)
        plan = schedule(snapshot, _with_placed(request, remaining, placed), config)
        try:
            views = _commit(session, snapshot, plan.placements, request)
        except GenerationConflict:
            # Read the hosts of the lost plan by id: a snapshot can hold a generation that
            # updated_at will not reveal (a claim of this process applied, then rolled back
            # with its transaction); the write lock (SQLite) or the CAS makes the next try
            # see them as they are. Usually they are all that changed (another worker's claim
            # on the host this one chose too): only a second loss reads every changed host,
            # which inside the write turn every writer would wait for.
            conflicts += 1
            fresh = conflicts > 1
            lost = {p.host_id for p in plan.placements}
            continue
        lost = set()
        snapshots.claimed(views)
        placed += plan.placements
        if len(placed) == request.count or (plan.unplaced is not None and fresh):
            missing = request.count - len(placed)
            return Outcome((*placed, *([None] * missing)), plan.unplaced)
        fresh = True  # before saying no host fits, look at the hosts as they are now
    missing = request.count - len(placed)
    return Outcome((*placed, *([None] * missing)), None)


def _with_placed(request: Request, count: int, placed: Sequence[Placement]) -> Request:
    """The rest of a batch: its group now also has members on the hosts already claimed."""
    group = request.group
    if group is not None and placed:
        group = replace(group, member_host_ids=group.member_host_ids | {p.host_id for p in placed})
    return replace(request, count=count, group=group)


def _commit(
    session: Session, snapshot: Snapshot, placements: Sequence[Placement], request: Request
) -> list[HostView]:
    """One compare-and-swap per chosen host, claiming all its instances of the batch at
    once. Raises GenerationConflict when a host changed since the snapshot was taken (the
    savepoint undoes this attempt's earlier claims)."""
    per_host = Counter(p.host_id for p in placements)
    if len(per_host) == 1:
        # a lone compare-and-swap that fails has written nothing: no savepoint to undo it
        return _claim_hosts(session, snapshot, per_host, request)
    with session.begin_nested():
        return _claim_hosts(session, snapshot, per_host, request)


def _claim_hosts(
    session: Session, snapshot: Snapshot, per_host: Counter[str], request: Request
) -> list[HostView]:
    views = []
    for host_id, n in sorted(per_host.items()):
        host = snapshot.host(host_id)
        assert host is not None
        changes = {
            "allocated_vcpus": host.allocated_vcpus + n * request.vcpus,
            "allocated_ram_mb": host.allocated_ram_mb + n * request.ram_mb,
            "allocated_disk_gb": host.allocated_disk_gb + n * request.disk_gb,
            "instance_count": host.instances + n,
        }
        generation = compare_and_swap(session, Host, host_id, host.generation, changes)
        views.append(
            replace(
                host,
                allocated_vcpus=changes["allocated_vcpus"],
                allocated_ram_mb=changes["allocated_ram_mb"],
                allocated_disk_gb=changes["allocated_disk_gb"],
                instances=changes["instance_count"],
                generation=generation,
            )
        )
    return views


def _give_back(column: Any, amount: Any) -> Any:
    return case((column > amount, column - amount), else_=0)


_HOSTS = table_of(Host).c
_RELEASE = (
    update(table_of(Host))
    .where(_HOSTS.id == bindparam("b_host_id"))
    .values(
        allocated_vcpus=_give_back(_HOSTS.allocated_vcpus, bindparam("b_vcpus")),
        allocated_ram_mb=_give_back(_HOSTS.allocated_ram_mb, bindparam("b_ram_mb")),
        allocated_disk_gb=_give_back(_HOSTS.allocated_disk_gb, bindparam("b_disk_gb")),
        instance_count=_give_back(_HOSTS.instance_count, 1),
        generation=_HOSTS.generation + 1,
        updated_at=bindparam("b_now"),
    )
    .returning(
        _HOSTS.generation,
        _HOSTS.allocated_vcpus,
        _HOSTS.allocated_ram_mb,
        _HOSTS.allocated_disk_gb,
        _HOSTS.instance_count,
    )
)


def release(
    session: Session, host_id: str, vcpus: int, ram_mb: int, disk_gb: int
) -> HostChange | None:
    """Give one instance's resources back to its host (never below zero), in one statement
    that bumps the generation as a compare-and-swap would; None when the host is gone."""
    params = {"b_host_id": host_id, "b_vcpus": vcpus, "b_ram_mb": ram_mb, "b_disk_gb": disk_gb}
    row = session.execute(_RELEASE, {**params, "b_now": utcnow()}).first()
    if row is None:
        return None
    return HostChange(host_id, *row)
