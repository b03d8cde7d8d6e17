"""``schedule``: a snapshot and a request in, a plan out; nothing read or written elsewhere.

A batch is placed in one pass, instance after instance; each placement is taken off the
scope's copy of the free capacity, instance counts and group membership, so the plan never
overbooks a host (the caller's compare-and-swap on each host's generation guards against the
rest of the world) and anti-affinity spreads the batch's own members. Filters whose verdict
cannot change during the batch are computed once.
"""

from __future__ import annotations

import numpy as np

from nubes.scheduler.columns import normalize_hypervisor
from nubes.scheduler.filters import FILTERS, Filter, Scope, uses_dynamic_names
from nubes.scheduler.model import (
    Config,
    HostView,
    NoFit,
    Placement,
    Plan,
    Rejection,
    Request,
    Snapshot,
)
from nubes.scheduler.strings import Array
from nubes.scheduler.weighers import best, rank_of

#: The image file a driver runs natively; others it can only convert (containers from disks).
NATIVE_KIND = {"lxc": "rootfs", "qemu": "disk"}

_DEFAULT_CONFIG = Config()


def schedule(snapshot: Snapshot, request: Request, config: Config = _DEFAULT_CONFIG) -> Plan:
    scope = Scope(snapshot.table, request, config)
    static = [f for f in FILTERS if not f.dynamic(request)]
    dynamic = [f for f in FILTERS if f.dynamic(request)]
    fixed = _all_pass(scope, static)
    rank_moves = uses_dynamic_names(request.rank)
    rank = rank_of(scope)
    placements: list[Placement] = []
    for _ in range(request.count):
        if rank_moves and placements:
            rank = rank_of(scope)
        rows = np.flatnonzero(_all_pass(scope, dynamic, fixed))
        if not len(rows):
            return Plan(tuple(placements), _explain(scope))
        row = best(scope, rows, rank)
        host = scope.table.host_at(row)
        placements.append(Placement(host.id, host.name, image_kind(host, request), host.generation))
        scope.consume(row)
    return Plan(tuple(placements))


def explain(snapshot: Snapshot, request: Request, config: Config = _DEFAULT_CONFIG) -> NoFit:
    """Why each host would turn the request down now (``fit`` counts those that would not)."""
    return _explain(Scope(snapshot.table, request, config))


def image_kind(host: HostView, request: Request) -> str:
    """The image file to boot on ``host``: the kind its driver runs natively if the image
    has it, else the first kind the image offers that the host can run."""
    offered = [kind for kind in request.image_kinds if kind in host.image_kinds]
    native = NATIVE_KIND.get(normalize_hypervisor(host.driver))
    return native if native in offered else offered[0]


def _all_pass(scope: Scope, filters: list[Filter], start: Array | None = None) -> Array:
    verdict = (scope.table.live if start is None else start).copy()
    for unit in filters:
        passes = unit.passes(scope)
        if passes is not None:
            verdict &= passes
    return verdict


def _explain(scope: Scope) -> NoFit:
    total = scope.table.count
    if total == 0:
        return NoFit(0, (), {})
    remaining = scope.table.live.copy()
    rejected_by: list[tuple[int, Filter, Array]] = []
    for order, unit in enumerate(FILTERS):
        passes = unit.passes(scope)
        if passes is None:
            continue
        rejected = remaining & ~passes
        if rejected.any():
            rejected_by.append((order, unit, rejected))
            remaining &= passes
    rejected_by.sort(key=lambda entry: (-int(entry[2].sum()), entry[0]))
    reasons = []
    per_host: dict[str, str] = {}
    hostnames = scope.table.strings["HOSTNAME"]
    for _, unit, rejected in rejected_by:
        reason = unit.reason(scope.request)
        detail = unit.detail(scope, rejected) if unit.detail is not None else ""
        reasons.append(Rejection(reason, int(rejected.sum()), detail))
        names = [hostnames.table.values[code] for code in hostnames.codes[rejected].tolist()]
        per_host.update(dict.fromkeys(names, reason))
    return NoFit(total, tuple(reasons), per_host, fit=int(remaining.sum()))
