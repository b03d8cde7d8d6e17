"""The hard filters, each a named unit with the reason a user reads when it turns a host down.

A filter answers for every host at once (a boolean array). The order of ``FILTERS`` is the
order reasons are given in: a host is counted once, under the first filter it fails, so the
cheap and operator-meaningful verdicts (disabled, down, wrong zone) come before capacity.

Filters read the snapshot through a ``Scope``: the columns of one scheduling call under the
overlay of what the batch placed so far, so a batch never overbooks a host and
anti-affinity sees the batch's own members.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from nubes.scheduler.columns import (
    BUILTIN_NAMES,
    DYNAMIC_NAMES,
    STRING_BUILTINS,
    Table,
    kind_bits,
    normalize_arch,
    normalize_hypervisor,
)
from nubes.scheduler.expr import Expression, names
from nubes.scheduler.model import Config, Request
from nubes.scheduler.strings import Array, StrColumn, StrTable
from nubes.scheduler.vectorized import requirement_mask

#: extra-spec scopes matched against aggregate metadata (besides keys with no scope)
_SPEC_SCOPES = ("aggregate", "aggregate_instance_extra_specs")
#: a hypervisor that stands in for any other (tests and demos run on it)
_ANY_HYPERVISOR = "fake"


class Scope:
    """One scheduling call: the snapshot's columns, and what the batch has consumed so far.
    Also the ``Attributes`` an expression reads."""

    def __init__(self, table: Table, request: Request, config: Config) -> None:
        self.table = table
        self.request = request
        self.config = config
        numbers = table.numbers
        self.free_vcpus: Array = numbers["free_vcpus"].copy()
        self.free_ram_mb: Array = numbers["free_ram_mb"].copy()
        self.free_disk_gb: Array = numbers["free_disk_gb"].copy()
        self.instances: Array = numbers["instances"].copy()
        self.members = np.zeros(table.rows, dtype=bool)  # hosts running a group member
        if request.group is not None:
            rows = [table.index[i] for i in request.group.member_host_ids if i in table.index]
            self.members[rows] = True
        self.placed = 0

    @property
    def size(self) -> int:
        """Rows, free ones included (every verdict is and-ed with ``table.live``)."""
        return self.table.rows

    def consume(self, row: int) -> None:
        request = self.request
        self.free_vcpus[row] -= request.vcpus
        self.free_ram_mb[row] -= request.ram_mb
        self.free_disk_gb[row] -= request.disk_gb
        self.instances[row] += 1
        self.members[row] = True
        self.placed += 1

    def numbers(self, name: str) -> Array | None:
        if name in DYNAMIC_NAMES:
            return {
                "FREE_VCPUS": self.free_vcpus,
                "FREE_RAM_MB": self.free_ram_mb,
                "FREE_DISK_GB": self.free_disk_gb,
                "INSTANCES": self.instances,
            }[name].astype(np.float64)
        if name == "ACCELERATED":
            return self.table.numbers["accelerated"].astype(np.float64)
        if name in STRING_BUILTINS:
            return None
        return self.table.metrics.get(name)

    def strings(self, name: str) -> StrColumn | None:
        if name in STRING_BUILTINS:
            return self.table.strings[name]
        if name in BUILTIN_NAMES:
            return None
        return self.table.text_metrics.get(name)


@dataclass(frozen=True)
class Filter:
    name: str
    #: what a user reads for a host this filter turned down
    reason: Callable[[Request], str]
    #: True where a host passes; None when the request does not ask for this check
    passes: Callable[[Scope], Array | None]
    #: whether the verdict changes as the batch places instances
    dynamic: Callable[[Request], bool] = lambda request: False
    #: added to the aggregated reason: "(need 2048 MB, largest free 1024 MB)"
    detail: Callable[[Scope, Array], str] | None = None


def _enabled(scope: Scope) -> Array:
    return scope.table.numbers["enabled"]


def _up(scope: Scope) -> Array:
    return scope.table.numbers["up"]


def _zone(scope: Scope) -> Array | None:
    zone = scope.request.zone
    return None if zone is None else scope.table.strings["ZONE"].equal_to(zone)


def _arch(scope: Scope) -> Array | None:
    arch = scope.request.arch
    return None if arch is None else scope.table.strings["ARCH"].equal_to(normalize_arch(arch))


def _hypervisor(scope: Scope) -> Array | None:
    wanted = scope.request.hypervisor
    if wanted is None:
        return None
    column = scope.table.strings["HYPERVISOR"]
    return column.equal_to(normalize_hypervisor(wanted)) | column.equal_to(_ANY_HYPERVISOR)


def _image_kind(scope: Scope) -> Array:
    runs: Array = (scope.table.numbers["kinds"] & kind_bits(scope.request.image_kinds)) != 0
    return runs


def aggregate_specs(extra_specs: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """The flavor's extra specs that aggregate metadata must satisfy: unscoped keys and the
    ``aggregate:`` scope; other scopes (``hw:``, ``quota:`` …) belong to other parts."""
    for key, wanted in extra_specs.items():
        scope, colon, rest = key.partition(":")
        if not colon:
            yield key, str(wanted)
        elif scope in _SPEC_SCOPES and rest:
            yield rest, str(wanted)


def spec_matches(actual: str, wanted: str) -> bool:
    """Nova's extra-spec operators: ``<or> a <or> b``, ``<in> sub``, ``s== x`` (string
    comparisons), ``>= 4`` / ``<= 4`` / ``== 4`` / ``!= 4`` and ``= 4`` (meaning at least 4)
    on numbers; anything else must equal the value exactly."""
    words = wanted.split()
    op = words[0] if words else ""
    operand = words[1] if len(words) > 1 else None
    if op == "<or>":
        return actual in words[1::2]
    if op == "<in>":
        return operand is not None and operand in actual
    if op in _STRING_OPS:
        return operand is not None and _STRING_OPS[op](actual, operand)
    if op in _NUMBER_OPS:
        try:
            return operand is not None and _NUMBER_OPS[op](float(actual), float(operand))
        except ValueError:
            return False
    return actual == wanted


_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "s==": operator.eq,
    "s!=": operator.ne,
    "s<": operator.lt,
    "s<=": operator.le,
    "s>": operator.gt,
    "s>=": operator.ge,
}
_NUMBER_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.ge,  # Nova's "= 4" means at least 4
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
}


def _extra_specs(scope: Scope) -> Array | None:
    specs = list(aggregate_specs(scope.request.extra_specs))
    if not specs:
        return None
    verdict = np.ones(scope.size, dtype=bool)
    for key, wanted in specs:
        column = scope.table.metadata.get(key)
        if column is None:
            return np.zeros(scope.size, dtype=bool)
        verdict &= column.matching(("spec", wanted), _spec_verdicts(wanted))
    return verdict


def _spec_verdicts(wanted: str) -> Callable[[StrTable], Array]:
    def compute(table: StrTable) -> Array:
        return np.fromiter((spec_matches(value, wanted) for value in table.values), bool)

    return compute


def _requirements(scope: Scope) -> Array | None:
    expr = scope.request.requirements
    return None if expr is None else requirement_mask(expr, scope)


def uses_dynamic_names(expr: Expression | None) -> bool:
    return expr is not None and not DYNAMIC_NAMES.isdisjoint(names(expr))


def _hard_group(policy: str) -> Callable[[Scope], Array | None]:
    def passes(scope: Scope) -> Array | None:
        group = scope.request.group
        if group is None or group.policy != policy:
            return None
        if policy == "anti-affinity":
            return ~scope.members
        # affinity: wherever the group already runs (even if those hosts are gone, as Nova
        # does: the group must not split); anywhere while it runs nowhere
        runs = bool(group.member_host_ids) or scope.placed > 0
        return scope.members if runs else None

    return passes


def _instance_limit(scope: Scope) -> Array | None:
    limits = scope.table.numbers["max_instances"]
    default = scope.config.default_max_instances
    limit = np.where(limits >= 0, limits, np.iinfo(np.int64).max if default is None else default)
    return scope.instances < limit


def _room(column: str, need: Callable[[Request], int]) -> Callable[[Scope], Array]:
    def passes(scope: Scope) -> Array:
        free: Array = getattr(scope, column)
        return free >= need(scope.request)

    return passes


def _largest_free(
    column: str, need: Callable[[Request], int], unit: str
) -> Callable[[Scope, Array], str]:
    def detail(scope: Scope, rejected: Array) -> str:
        free: Array = getattr(scope, column)
        largest = max(int(free[rejected].max()), 0) if rejected.any() else 0
        return f"(need {need(scope.request)}{unit}, largest free {largest}{unit})"

    return detail


def _need_ram(request: Request) -> int:
    return request.ram_mb


def _need_vcpus(request: Request) -> int:
    return request.vcpus


def _need_disk(request: Request) -> int:
    return request.disk_gb


def _kinds_reason(request: Request) -> str:
    return f"cannot run this image ({'/'.join(request.image_kinds) or 'no files'})"


def _always(request: Request) -> bool:
    return True


def _fixed(reason: str) -> Callable[[Request], str]:
    return lambda request: reason


FILTERS: tuple[Filter, ...] = (
    Filter("enabled", _fixed("disabled"), _enabled),
    Filter("up", _fixed("down"), _up),
    Filter("zone", _fixed("in another zone"), _zone),
    Filter("arch", _fixed("wrong architecture"), _arch),
    Filter("hypervisor", _fixed("wrong hypervisor"), _hypervisor),
    Filter("image_kind", _kinds_reason, _image_kind),
    Filter("extra_specs", _fixed("flavor extra specs not met"), _extra_specs),
    Filter(
        "requirements",
        _fixed("REQUIREMENTS not met"),
        _requirements,
        lambda request: uses_dynamic_names(request.requirements),
    ),
    Filter("affinity", _fixed("affinity"), _hard_group("affinity"), _always),
    Filter("anti_affinity", _fixed("anti-affinity"), _hard_group("anti-affinity"), _always),
    Filter("instance_limit", _fixed("at its instance limit"), _instance_limit, _always),
    Filter(
        "ram",
        _fixed("not enough RAM"),
        _room("free_ram_mb", _need_ram),
        _always,
        _largest_free("free_ram_mb", _need_ram, " MB"),
    ),
    Filter(
        "vcpus",
        _fixed("not enough vCPUs"),
        _room("free_vcpus", _need_vcpus),
        _always,
        _largest_free("free_vcpus", _need_vcpus, ""),
    ),
    Filter(
        "disk",
        _fixed("not enough disk"),
        _room("free_disk_gb", _need_disk),
        _always,
        _largest_free("free_disk_gb", _need_disk, " GB"),
    ),
)
