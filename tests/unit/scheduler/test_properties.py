"""Random snapshots and requests against a slow reference written host by host, apart from
the vectorized code: every placement passes every hard filter under what the batch already
placed, capacity is never exceeded, a batch stops only when no host fits, every host's
reason is the first filter it fails, and expressions mean the same on one host and on all."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nubes.scheduler import (
    Config,
    HostView,
    Request,
    ServerGroupView,
    Snapshot,
    explain,
    parse_rank,
    parse_requirements,
    schedule,
)
from nubes.scheduler.evaluate import evaluate, host_attributes
from nubes.scheduler.filters import Scope
from nubes.scheduler.vectorized import rank_values, requirement_mask

REQUIREMENTS = [
    None,
    "LOAD1 < 2",
    'GPU = "h100" | LOAD1 >= 3',
    'HOSTNAME = "h-1*"',
    "!(LOAD1 > 1) & FREE_VCPUS >= 2",
    "FREE_RAM_MB / 1024 > 2",
]
RANKS = [None, "LOAD1", "-INSTANCES", "FREE_RAM_MB / 1024 - LOAD1 * 2"]


# --- the reference -----------------------------------------------------------------------


@dataclasses.dataclass
class Used:
    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0
    instances: int = 0


def with_usage(h: HostView, used: Used) -> HostView:
    return dataclasses.replace(
        h,
        allocated_vcpus=h.allocated_vcpus + used.vcpus,
        allocated_ram_mb=h.allocated_ram_mb + used.ram_mb,
        allocated_disk_gb=h.allocated_disk_gb + used.disk_gb,
        instances=h.instances + used.instances,
    )


def reference_reason(h: HostView, r: Request, config: Config, members: set[str]) -> str | None:
    """The first filter ``h`` fails, written plainly, one host at a time."""
    if not h.enabled:
        return "disabled"
    if h.state != "monitored":
        return "down"
    if r.zone is not None and h.zone != r.zone:
        return "in another zone"
    if r.arch is not None and h.arch != r.arch:
        return "wrong architecture"
    if r.hypervisor is not None and h.driver not in (r.hypervisor, "fake"):
        return "wrong hypervisor"
    if not set(h.image_kinds) & set(r.image_kinds):
        return f"cannot run this image ({'/'.join(r.image_kinds) or 'no files'})"
    for key, wanted in r.extra_specs.items():
        if ":" in key and not key.startswith("aggregate:"):
            continue
        if h.aggregate_metadata.get(key.removeprefix("aggregate:")) != wanted:
            return "flavor extra specs not met"
    if r.requirements is not None and not evaluate(r.requirements, host_attributes(h)):
        return "REQUIREMENTS not met"
    if r.group is not None and r.group.policy == "affinity" and members and h.id not in members:
        return "affinity"
    if r.group is not None and r.group.policy == "anti-affinity" and h.id in members:
        return "anti-affinity"
    limit = config.default_max_instances if h.max_instances is None else h.max_instances
    if limit is not None and h.instances >= limit:
        return "at its instance limit"
    if int(h.ram_mb * h.ram_ratio) - h.allocated_ram_mb < r.ram_mb:
        return "not enough RAM"
    if int(h.vcpus * h.cpu_ratio) - h.allocated_vcpus < r.vcpus:
        return "not enough vCPUs"
    if int(h.disk_gb * h.disk_ratio) - h.allocated_disk_gb < r.disk_gb:
        return "not enough disk"
    return None


# --- random clouds -----------------------------------------------------------------------


@st.composite
def clouds(draw: st.DrawFn) -> list[HostView]:
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        metrics: dict[str, float | str] = {}
        if draw(st.booleans()):
            metrics["LOAD1"] = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 8.0]))
        if draw(st.integers(0, 3)) == 0:
            metrics["GPU"] = draw(st.sampled_from(["h100", "a100"]))
        driver = draw(st.sampled_from(["qemu", "lxc", "fake"]))
        vcpus = draw(st.integers(0, 16))
        ram_mb = draw(st.sampled_from([0, 512, 2048, 4096, 8192]))
        disk_gb = draw(st.sampled_from([0, 10, 50, 100]))
        out.append(
            HostView(
                id=f"id-{i}",
                name=f"h-{i}",
                state=draw(st.sampled_from(["monitored", "monitored", "monitored", "error"])),
                enabled=draw(st.integers(0, 5)) > 0,
                driver=driver,
                arch=draw(st.sampled_from(["x86_64", "x86_64", "aarch64"])),
                zone=draw(st.sampled_from(["a", "b"])),
                aggregate_metadata=draw(st.sampled_from([{}, {"ssd": "true"}, {"ssd": "no"}])),
                vcpus=vcpus,
                ram_mb=ram_mb,
                disk_gb=disk_gb,
                allocated_vcpus=draw(st.integers(0, vcpus + 2)),
                allocated_ram_mb=draw(st.sampled_from([0, 512, 1024, 4096])),
                allocated_disk_gb=draw(st.sampled_from([0, 5, 20])),
                cpu_ratio=draw(st.sampled_from([0.5, 1.0, 1.5, 4.0])),
                ram_ratio=draw(st.sampled_from([1.0, 1.5])),
                disk_ratio=draw(st.sampled_from([0.9, 1.0, 2.0])),
                image_kinds=draw(
                    st.sampled_from(
                        [frozenset({"disk"}), frozenset({"rootfs"}), frozenset({"disk", "rootfs"})]
                    )
                ),
                metrics=metrics,
                instances=draw(st.integers(0, 4)),
                max_instances=draw(st.sampled_from([None, None, 2, 5])),
                generation=draw(st.integers(0, 3)),
            )
        )
    return out


@st.composite
def requests(draw: st.DrawFn, ids: int = 12) -> Request:
    group = None
    if draw(st.booleans()):
        policy = draw(
            st.sampled_from(["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"])
        )
        members = draw(st.frozensets(st.sampled_from([f"id-{i}" for i in range(ids)]), max_size=3))
        group = ServerGroupView("g", "group", policy, members)
    requirements = draw(st.sampled_from(REQUIREMENTS))
    rank = draw(st.sampled_from(RANKS))
    return Request(
        vcpus=draw(st.integers(0, 4)),
        ram_mb=draw(st.sampled_from([0, 256, 512, 1024, 2048])),
        disk_gb=draw(st.sampled_from([0, 5, 10])),
        image_kinds=draw(st.sampled_from([("disk",), ("rootfs",), ("rootfs", "disk"), ()])),
        count=draw(st.integers(1, 12)),
        zone=draw(st.sampled_from([None, None, "a"])),
        arch=draw(st.sampled_from([None, None, "x86_64"])),
        hypervisor=draw(st.sampled_from([None, None, "qemu", "lxc"])),
        extra_specs=draw(
            st.sampled_from([{}, {"ssd": "true"}, {"hw:x": "1", "aggregate:ssd": "no"}])
        ),
        requirements=None if requirements is None else parse_requirements(requirements),
        rank=None if rank is None else parse_rank(rank),
        group=group,
    )


configs = st.builds(
    Config,
    weigher=st.sampled_from(["pack", "spread", "load"]),
    default_max_instances=st.sampled_from([None, 3]),
)


# --- the properties ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clouds(), requests(), configs)
def test_every_placement_passes_every_hard_filter_and_nothing_is_overbooked(
    fleet: list[HostView], r: Request, config: Config
) -> None:
    plan = schedule(Snapshot.build(fleet), r, config)
    by_id = {h.id: h for h in fleet}
    used = {h.id: Used() for h in fleet}
    members = set(r.group.member_host_ids) if r.group else set()
    for placement in plan.placements:
        h = by_id[placement.host_id]
        assert (placement.host_name, placement.generation) == (h.name, h.generation)
        assert placement.image_kind in set(h.image_kinds) & set(r.image_kinds)
        now = with_usage(h, used[h.id])
        assert reference_reason(now, r, config, members) is None
        u = used[h.id]
        u.vcpus, u.ram_mb, u.disk_gb = u.vcpus + r.vcpus, u.ram_mb + r.ram_mb, u.disk_gb + r.disk_gb
        u.instances += 1
        members.add(h.id)
    for h in fleet:
        after = with_usage(h, used[h.id])
        if used[h.id].instances:
            assert after.allocated_ram_mb <= int(h.ram_mb * h.ram_ratio)
            assert after.allocated_vcpus <= int(h.vcpus * h.cpu_ratio)
            assert after.allocated_disk_gb <= int(h.disk_gb * h.disk_ratio)
    placed = len(plan.placements)
    assert placed == r.count or plan.unplaced is not None
    if placed < r.count:
        # it stopped only because, after what it placed, no host fits at all
        reasons = {
            h.name: reference_reason(with_usage(h, used[h.id]), r, config, members) for h in fleet
        }
        assert all(reason is not None for reason in reasons.values())
        assert plan.unplaced is not None
        assert dict(plan.unplaced.per_host) == reasons
        assert plan.unplaced.total == len(fleet)
        assert sum(rejection.count for rejection in plan.unplaced.reasons) == len(fleet)
    else:
        assert plan.unplaced is None


@settings(max_examples=300, deadline=None)
@given(clouds(), requests(), configs)
def test_explain_gives_every_host_its_first_failing_filter(
    fleet: list[HostView], r: Request, config: Config
) -> None:
    members = set(r.group.member_host_ids) if r.group else set()
    expected = {h.name: reference_reason(h, r, config, members) for h in fleet}
    nofit = explain(Snapshot.build(fleet), r, config)
    assert dict(nofit.per_host) == {name: why for name, why in expected.items() if why}
    assert nofit.fit == sum(1 for why in expected.values() if why is None)
    counts = Counter(why for why in expected.values() if why)
    assert {rejection.reason: rejection.count for rejection in nofit.reasons} == counts
    for name in (h.name for h in fleet):
        assert name not in nofit.user_message()
    if nofit.fit == 0 and fleet:
        placed = schedule(Snapshot.build(fleet), r, config)
        assert placed.placements == ()
        assert placed.unplaced == nofit


# --- expressions: the vectorized path against the one-host reference -----------------------

NUMBER_NAMES = ["A", "B", "FREE_VCPUS", "INSTANCES", "MISSING", "S"]
STRING_NAMES = ["S", "HOSTNAME", "ZONE", "A"]
PATTERNS = ["x", "node-1", "node-*", "*-1", "*", "", "n*e*1", "eu"]
VALUES: list[Any] = [
    0,
    1,
    -1,
    2.5,
    3,
    1e308,
    -1e308,
    math.inf,
    -math.inf,
    math.nan,
    "x",
    "node-1",
    True,
]

numbers = st.recursive(
    st.one_of(
        st.sampled_from(NUMBER_NAMES),
        st.integers(-3, 5).map(str),
        st.sampled_from(["0.5", "1024"]),
    ),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda e: f"-{e}"),
    ),
    max_leaves=6,
)
comparisons = st.one_of(
    st.tuples(numbers, st.sampled_from(["=", "!=", ">", "<", ">=", "<="]), numbers).map(" ".join),
    st.tuples(
        st.sampled_from(STRING_NAMES), st.sampled_from(["=", "!="]), st.sampled_from(PATTERNS)
    ).map(lambda t: f'{t[0]} {t[1]} "{t[2]}"'),
    st.tuples(
        st.sampled_from(PATTERNS), st.sampled_from(["=", "!="]), st.sampled_from(STRING_NAMES)
    ).map(lambda t: f'"{t[0]}" {t[1]} {t[2]}'),
    st.tuples(
        st.sampled_from(STRING_NAMES), st.sampled_from(["=", "!="]), st.sampled_from(STRING_NAMES)
    ).map(" ".join),
)
conditions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["&", "|"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda e: f"!({e})"),
    ),
    max_leaves=5,
)


@st.composite
def expression_hosts(draw: st.DrawFn) -> list[HostView]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        metrics = {
            name: draw(st.sampled_from(VALUES))
            for name in ("A", "B", "S", "FREE_VCPUS")
            if draw(st.booleans())
        }
        out.append(
            HostView(
                id=f"id-{i}",
                name=draw(st.sampled_from(["node-1", "node-12", "x", "eu", "n1"])) + f"-{i}",
                zone=draw(st.sampled_from(["", "eu", "x"])),
                vcpus=draw(st.integers(0, 8)),
                allocated_vcpus=draw(st.integers(0, 10)),
                instances=draw(st.integers(0, 3)),
                metrics=metrics,
            )
        )
    return out


def _same_number(vector: float, scalar: float) -> bool:
    return vector == scalar or (math.isnan(vector) and math.isnan(scalar))


@settings(max_examples=400, deadline=None)
@given(expression_hosts(), conditions)
def test_requirements_mean_the_same_on_one_host_and_on_all(
    fleet: list[HostView], text: str
) -> None:
    expr = parse_requirements(text)
    snap = Snapshot.build(fleet)
    mask = requirement_mask(expr, Scope(snap.table, Request(1, 1, 1), Config()))
    for h in fleet:
        assert bool(mask[snap.table.index[h.id]]) == evaluate(expr, host_attributes(h)), (text, h)


@settings(max_examples=400, deadline=None)
@given(expression_hosts(), numbers)
def test_ranks_mean_the_same_on_one_host_and_on_all(fleet: list[HostView], text: str) -> None:
    expr = parse_rank(text)
    snap = Snapshot.build(fleet)
    values = rank_values(expr, Scope(snap.table, Request(1, 1, 1), Config()))
    for h in fleet:
        scalar = evaluate(expr, host_attributes(h))
        assert isinstance(scalar, float)
        assert _same_number(float(values[snap.table.index[h.id]]), scalar), (text, h)
