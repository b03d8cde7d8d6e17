"""Choosing among the hosts that fit, and placing batches without overbooking."""

from __future__ import annotations

from collections import Counter

import pytest

from nubes.domain.errors import InvalidInput
from nubes.scheduler import Config, Request, ServerGroupView, image_kind, schedule
from tests.unit.scheduler.harness import host, hosts, placed_on, request, snapshot

PACK, SPREAD, LOAD = Config(weigher="pack"), Config(weigher="spread"), Config(weigher="load")


def test_pack_and_spread_choose_differently() -> None:
    snap = snapshot(
        host("busy", ram_mb=8192, allocated_ram_mb=6144, vcpus=8, allocated_vcpus=6),
        host("idle", ram_mb=8192, vcpus=8),
    )
    assert placed_on(schedule(snap, request(), PACK)) == ["busy"]
    assert placed_on(schedule(snap, request(), SPREAD)) == ["idle"]


def test_pack_fills_one_host_before_the_next_and_spread_round_robins() -> None:
    snap = snapshot(hosts(3, vcpus=4, ram_mb=4096))
    packed = Counter(placed_on(schedule(snap, request(count=6), PACK)))
    assert sorted(packed.values()) == [2, 4]  # fewest hosts busy
    spread = Counter(placed_on(schedule(snap, request(count=6), SPREAD)))
    assert spread == {"node-1": 2, "node-2": 2, "node-3": 2}


def test_load_prefers_the_least_used_cpu() -> None:
    snap = snapshot(
        host("a", metrics={"USED_CPU": 80.0}),
        host("b", metrics={"USED_CPU": 10.0}),
        host("c", metrics={"LOAD1": 0.8}, vcpus=8),  # 10 % from LOAD1 per vCPU
        host("d"),  # reports nothing: chosen last
    )
    assert placed_on(schedule(snap, request(), LOAD)) == ["b"]
    without_b = snapshot(host("a", metrics={"USED_CPU": 80.0}), host("d"))
    assert placed_on(schedule(without_b, request(), LOAD)) == ["a"]
    by_load1 = snapshot(
        host("c", metrics={"LOAD1": 0.8}, vcpus=8), host("e", metrics={"LOAD1": 4.0})
    )
    assert placed_on(schedule(by_load1, request(), LOAD)) == ["c"]


def test_rank_orders_hosts_higher_first() -> None:
    snap = snapshot(
        host("a", metrics={"FREE_MEMORY": 1000, "RUNNING_VMS": 5}),
        host("b", metrics={"FREE_MEMORY": 3000, "RUNNING_VMS": 9}),
        host("c", metrics={"FREE_MEMORY": 2000, "RUNNING_VMS": 1}),
    )
    assert placed_on(schedule(snap, request(rank="FREE_MEMORY"))) == ["b"]
    assert placed_on(schedule(snap, request(rank="-RUNNING_VMS"))) == ["c"]
    assert placed_on(schedule(snap, request(rank="-FREE_MEMORY"))) == ["a"]


def test_rank_outweighs_the_strategy_by_default() -> None:
    snap = snapshot(
        host("empty", metrics={"SCORE": 1}),
        host("half", allocated_ram_mb=4096, allocated_vcpus=4, metrics={"SCORE": 2}),
    )
    assert placed_on(schedule(snap, request(), SPREAD)) == ["empty"]
    assert placed_on(schedule(snap, request(rank="SCORE"), SPREAD)) == ["half"]
    weak = Config(weigher="spread", rank_weight=0.1)
    assert placed_on(schedule(snap, request(rank="SCORE"), weak)) == ["empty"]


def test_rank_treats_a_missing_metric_as_zero() -> None:
    snap = snapshot(host("a", metrics={"X": -5}), host("b"), host("c", metrics={"X": 3}))
    ranked = schedule(snap, request(count=3, rank="X"), Config(weigher="pack"))
    assert placed_on(ranked)[0] == "c"
    assert placed_on(schedule(snap, request(rank="-X"))) == ["a"]


def test_ties_go_to_the_first_host_by_name_whatever_the_input_order() -> None:
    names = ["m", "c", "x", "a", "k"]
    snap = snapshot([host(n) for n in names])
    for config in (PACK, SPREAD, LOAD):
        assert placed_on(schedule(snap, request(), config)) == ["a"]


@pytest.mark.parametrize(
    ("tie_start", "first"), [(0.0, "a"), (0.2, "c"), (0.5, "k"), (0.6, "m"), (0.99, "x")]
)
def test_ties_start_at_the_workers_share_of_the_name_order(tie_start: float, first: str) -> None:
    # five equal hosts; by name: a c k m x. A worker's share picks where ties start, so two
    # workers placing at once on equal hosts go to different ones; past the last name, round
    snap = snapshot([host(n) for n in ["m", "c", "x", "a", "k"]])
    for weigher in ("pack", "spread", "load"):
        config = Config(weigher=weigher, tie_start=tie_start)  # type: ignore[arg-type]
        assert placed_on(schedule(snap, request(), config)) == [first]
    busier = snapshot([host("a"), host("x", allocated_vcpus=1)])  # no tie: the score decides
    assert placed_on(schedule(busier, request(), Config(tie_start=0.9))) == ["a"]
    spread = schedule(snap, request(count=5), Config(weigher="spread", tie_start=0.5))
    assert placed_on(spread) == ["k", "m", "x", "a", "c"]


def test_a_batch_never_overbooks() -> None:
    fleet = [host(f"n{i}", vcpus=4, ram_mb=5120 + 1024 * i, disk_gb=40) for i in range(6)]
    snap = snapshot(fleet)
    wanted = request(vcpus=1, ram_mb=1024, disk_gb=10, count=50)
    plan = schedule(snap, wanted, PACK)
    per_host = Counter(placed_on(plan))
    for h in fleet:
        n = per_host[h.name]
        assert n * 1 <= h.vcpus
        assert n * 1024 <= h.ram_mb
        assert n * 10 <= h.disk_gb
    assert len(plan.placements) == 6 * 4  # every host full on vCPUs and disk
    assert plan.unplaced is not None
    assert plan.unplaced.user_message() == (
        "0 of 6 hosts fit: 6 not enough vCPUs (need 1, largest free 0)"
    )


def test_a_batch_respects_instance_limits() -> None:
    snap = snapshot(hosts(2, max_instances=3, instances=1))
    plan = schedule(snap, request(count=10))
    assert Counter(placed_on(plan)) == {"node-1": 2, "node-2": 2}
    assert plan.unplaced is not None
    assert plan.unplaced.user_message() == "0 of 2 hosts fit: 2 at its instance limit"


def test_anti_affinity_spreads_a_batch() -> None:
    snap = snapshot(hosts(5))
    group = ServerGroupView("g", "web", "anti-affinity", frozenset({"id-node-2"}))
    plan = schedule(snap, request(count=6, group=group), PACK)
    assert sorted(placed_on(plan)) == ["node-1", "node-3", "node-4", "node-5"]
    assert plan.unplaced is not None
    assert plan.unplaced.user_message() == "0 of 5 hosts fit: 5 anti-affinity"


def test_affinity_keeps_a_batch_together() -> None:
    snap = snapshot(hosts(4, vcpus=3))
    group = ServerGroupView("g", "web", "affinity")
    plan = schedule(snap, request(count=4, group=group), SPREAD)
    assert placed_on(plan) == ["node-1"] * 3
    assert plan.unplaced is not None
    assert plan.unplaced.user_message() == (
        "0 of 4 hosts fit: 3 affinity, 1 not enough vCPUs (need 1, largest free 0)"
    )


def test_soft_affinity_prefers_the_group_but_does_not_insist() -> None:
    snap = snapshot(
        host("a"), host("b", allocated_vcpus=6, allocated_ram_mb=6144), host("c", vcpus=1)
    )
    group = ServerGroupView("g", "web", "soft-affinity", frozenset({"id-b"}))
    assert placed_on(schedule(snap, request(group=group), SPREAD)) == ["b"]
    plan = schedule(snap, request(vcpus=2, count=3, group=group), SPREAD)
    assert placed_on(plan) == ["b", "a", "a"]  # b full after one: the batch follows to a


def test_soft_anti_affinity_avoids_the_group_when_it_can() -> None:
    snap = snapshot(hosts(2))
    group = ServerGroupView("g", "web", "soft-anti-affinity", frozenset({"id-node-1"}))
    assert placed_on(schedule(snap, request(group=group), PACK)) == ["node-2"]
    plan = schedule(snap, request(count=4, group=group), PACK)
    assert len(plan.placements) == 4  # both hosts end up used, without refusing anything
    without = Config(weigher="pack", soft_affinity_weight=0)
    assert placed_on(schedule(snap, request(group=group), without)) == ["node-1"]


def test_requirements_on_free_capacity_follow_the_batch() -> None:
    snap = snapshot(hosts(2, ram_mb=4096))
    plan = schedule(snap, request(ram_mb=1024, count=8, requirements="FREE_RAM_MB > 3072"))
    assert Counter(placed_on(plan)) == {"node-1": 1, "node-2": 1}  # 4096, then 3072 free
    ranked = schedule(snap, request(ram_mb=1024, count=4, rank="FREE_RAM_MB"), PACK)
    assert Counter(placed_on(ranked)) == {"node-1": 2, "node-2": 2}


def test_placements_carry_the_generation_and_the_image_kind() -> None:
    snap = snapshot(
        host("vm", driver="qemu", generation=7),
        host("ct", driver="lxc", generation=3, allocated_vcpus=4),
    )
    plan = schedule(snap, request(image_kinds=("rootfs", "disk"), count=2), SPREAD)
    assert [(p.host_name, p.image_kind, p.generation) for p in plan.placements] == [
        ("vm", "disk", 7),
        ("ct", "rootfs", 3),
    ]
    assert plan.placements[0].host_id == "id-vm"


def test_image_kind_prefers_native_then_the_image_order() -> None:
    assert image_kind(host("a", driver="lxc"), request(image_kinds=("disk", "rootfs"))) == "rootfs"
    assert image_kind(host("a", driver="qemu"), request(image_kinds=("rootfs", "disk"))) == "disk"
    assert image_kind(host("a", driver="lxc"), request(image_kinds=("disk",))) == "disk"
    assert image_kind(host("a", driver="fake"), request(image_kinds=("rootfs", "disk"))) == "rootfs"


def test_a_partial_batch_places_some_and_explains_the_rest() -> None:
    snap = snapshot(hosts(1, vcpus=2), host("off", enabled=False))
    plan = schedule(snap, request(count=3))
    assert placed_on(plan) == ["node-1", "node-1"]
    assert plan.unplaced is not None
    assert plan.unplaced.admin_message() == (
        "0 of 2 hosts fit: 1 disabled, 1 not enough vCPUs (need 1, largest free 0); "
        "disabled: off; not enough vCPUs: node-1"
    )


def test_the_snapshot_is_not_changed_by_scheduling() -> None:
    snap = snapshot(hosts(1, vcpus=2))
    for _ in range(3):
        assert len(schedule(snap, request(count=2)).placements) == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"count": 0}, "count: must be at least 1"),
        ({"vcpus": -1}, "vcpus: must not be negative"),
    ],
)
def test_bad_requests_are_refused(fields: dict[str, int], message: str) -> None:
    values = {"vcpus": 1, "ram_mb": 1, "disk_gb": 1, **fields}
    with pytest.raises(InvalidInput, match=message):
        Request(**values)


def test_bad_configs_and_groups_are_refused() -> None:
    with pytest.raises(InvalidInput, match="weigher: 'fullest' is not one of pack, spread, load"):
        Config(weigher="fullest")  # type: ignore[arg-type]
    for bad in (-0.1, 1.0, 2.5):
        with pytest.raises(InvalidInput, match="tie_start: a fraction from 0"):
            Config(tie_start=bad)
    with pytest.raises(InvalidInput, match="default_max_instances: must not be negative"):
        Config(default_max_instances=-1)
    with pytest.raises(InvalidInput, match="policy: 'near'"):
        ServerGroupView("g", "x", "near")


def test_weights_are_normalised_even_for_extreme_values() -> None:
    snap = snapshot(
        host("a", metrics={"X": float("-inf")}),
        host("b", metrics={"X": 1e308}),
        host("c", metrics={"X": float("inf")}),
    )
    assert placed_on(schedule(snap, request(rank="X"))) == ["c"]
    assert placed_on(schedule(snap, request(rank="-X"))) == ["a"]
    assert placed_on(schedule(snap, request(rank="X * 0"))) == ["a"]  # inf * 0: counts as 0
