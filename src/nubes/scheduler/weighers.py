"""Ordering the hosts that passed every filter. Each weigher scores the candidates, the scores
are normalised to [0, 1] over the candidates (so a weight means the same whatever the unit:
MB, vCPUs, a RANK in arbitrary numbers) and summed with their weights; the highest wins.

- pack / spread: free RAM, vCPUs and disk, negated for pack (best fit: the fullest host that
  still fits, so fewer hosts are busy) or as is for spread (the emptiest host).
- load: the lowest CPU use (metric USED_CPU, else LOAD1 per vCPU, else counted as busy).
- RANK: higher is preferred, as in OpenNebula.
- soft-affinity / soft-anti-affinity: towards / away from hosts running the group.
"""

from __future__ import annotations

import numpy as np

from nubes.scheduler.filters import Scope
from nubes.scheduler.strings import Array
from nubes.scheduler.vectorized import rank_values

#: CPU use assumed for a host that reports no load at all: the worst, so it is chosen last
_UNKNOWN_LOAD = 100.0


def normalise(values: Array) -> Array:
    """Scaled to [0, 1] over the candidates; all equal (or one candidate) scores 0. Infinite
    values count as the largest finite ones, so one odd metric cannot blank out a weigher."""
    biggest = np.finfo(np.float64).max
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), posinf=biggest, neginf=-biggest)
    low, high = values.min() / 2, values.max() / 2  # halves: the span never overflows
    if high == low:
        return np.zeros(len(values))
    scaled: Array = (values / 2 - low) / (high - low)
    return scaled


def scores(scope: Scope, rows: Array, rank: Array | None) -> Array:
    """Each candidate row's total weight; ``rank`` is the RANK on every host, if any."""
    config = scope.config
    total = np.zeros(len(rows))
    if config.weigher == "load":
        total += config.load_weight * normalise(-cpu_load(scope)[rows])
    else:
        sign = 1.0 if config.weigher == "spread" else -1.0
        for weight, free in (
            (config.ram_weight, scope.free_ram_mb),
            (config.cpu_weight, scope.free_vcpus),
            (config.disk_weight, scope.free_disk_gb),
        ):
            if weight:
                total += sign * weight * normalise(free[rows])
    if rank is not None and config.rank_weight:
        total += config.rank_weight * normalise(rank[rows])
    group = scope.request.group
    if group is not None and group.policy.startswith("soft-") and config.soft_affinity_weight:
        near = scope.members[rows].astype(np.float64)
        toward = near if group.policy == "soft-affinity" else -near
        total += config.soft_affinity_weight * normalise(toward)
    return total


def cpu_load(scope: Scope) -> Array:
    metrics = scope.table.metrics
    nothing = np.full(scope.size, np.nan)
    used = metrics.get("USED_CPU", nothing)
    with np.errstate(all="ignore"):
        per_vcpu = 100.0 * metrics.get("LOAD1", nothing) / scope.table.numbers["vcpus"]
    per_vcpu = np.where(np.isfinite(per_vcpu), per_vcpu, _UNKNOWN_LOAD)
    return np.where(np.isnan(used), per_vcpu, used)


def best(scope: Scope, rows: Array, rank: Array | None) -> int:
    """The winning row; equal scores go to the host first by name from the config's
    ``tie_start`` on (wrapping round), the same on every run."""
    if len(rows) == 1:
        return int(rows[0])
    totals = scores(scope, rows, rank)
    tied = rows[totals == totals.max()]
    if len(tied) == 1:
        return int(tied[0])
    places = scope.table.name_rank[tied]
    if scope.config.tie_start:
        hosts = scope.table.count
        places = (places - int(scope.config.tie_start * hosts)) % hosts
    return int(tied[int(np.argmin(places))])


def rank_of(scope: Scope) -> Array | None:
    expr = scope.request.rank
    return None if expr is None else rank_values(expr, scope)
