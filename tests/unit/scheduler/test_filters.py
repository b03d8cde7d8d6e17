"""Every hard filter accepts and rejects, with the reason a user reads; the aggregated
messages for users and for operators."""

from __future__ import annotations

from typing import Any

import pytest

from nubes.scheduler import Config, HostView, Request, ServerGroupView, explain, schedule
from nubes.scheduler.filters import aggregate_specs, spec_matches
from tests.unit.scheduler.harness import host, hosts, placed_on, request, snapshot


def verdict(one: HostView, wanted: Request, config: Config | None = None) -> str | None:
    """None when ``one`` takes the request, else its reason; schedule and explain agree."""
    snap = snapshot(one)
    plan = schedule(snap, wanted, config or Config())
    reason = explain(snap, wanted, config or Config()).per_host.get(one.name)
    assert (reason is None) == bool(plan.placements), (reason, plan)
    return reason


# --- one filter at a time ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reason"), [("monitored", None), ("init", "down"), ("error", "down")]
)
def test_only_monitored_hosts_are_up(state: str, reason: str | None) -> None:
    assert verdict(host("a", state=state), request()) == reason


def test_disabled_hosts_get_nothing_and_disabled_is_said_before_down() -> None:
    assert verdict(host("a", enabled=False), request()) == "disabled"
    assert verdict(host("a", enabled=False, state="error"), request()) == "disabled"


def test_zone() -> None:
    assert verdict(host("a", zone="eu-2"), request(zone="eu-1")) == "in another zone"
    assert verdict(host("a", zone="eu-1"), request(zone="eu-1")) is None
    assert verdict(host("a", zone="eu-2"), request()) is None  # no zone asked: any


def test_image_kind() -> None:
    containers = host("a", driver="lxc", image_kinds={"rootfs"})
    assert verdict(containers, request(image_kinds=("disk",))) == "cannot run this image (disk)"
    assert verdict(containers, request(image_kinds=())) == "cannot run this image (no files)"
    assert verdict(containers, request(image_kinds=("disk", "rootfs"))) is None


def test_architecture_with_aliases() -> None:
    assert verdict(host("a", arch="x86_64"), request(arch="aarch64")) == "wrong architecture"
    assert verdict(host("a", arch="x86_64"), request(arch="amd64")) is None
    assert verdict(host("a", arch="aarch64"), request(arch="arm64")) is None
    assert verdict(host("a", arch="aarch64"), request()) is None


def test_hypervisor() -> None:
    assert verdict(host("a", driver="qemu"), request(hypervisor="lxc")) == "wrong hypervisor"
    assert verdict(host("a", driver="qemu"), request(hypervisor="kvm")) is None
    assert verdict(host("a", driver="lxc"), request(hypervisor="lxc")) is None
    assert verdict(host("a", driver="fake"), request(hypervisor="qemu")) is None


def test_ram_vcpus_and_disk_with_the_detail() -> None:
    full = host("a", ram_mb=4096, allocated_ram_mb=3072)
    assert verdict(full, request(ram_mb=2048)) == "not enough RAM"
    assert verdict(full, request(ram_mb=1024)) is None
    message = explain(snapshot(full), request(ram_mb=2048)).user_message()
    assert message == "0 of 1 hosts fit: 1 not enough RAM (need 2048 MB, largest free 1024 MB)"
    busy = host("a", vcpus=4, allocated_vcpus=3)
    assert explain(snapshot(busy), request(vcpus=2)).user_message() == (
        "0 of 1 hosts fit: 1 not enough vCPUs (need 2, largest free 1)"
    )
    small = host("a", disk_gb=50, allocated_disk_gb=45)
    assert explain(snapshot(small), request(disk_gb=10)).user_message() == (
        "0 of 1 hosts fit: 1 not enough disk (need 10 GB, largest free 5 GB)"
    )


def test_overallocated_hosts_report_zero_free() -> None:
    over = host("a", ram_mb=1024, allocated_ram_mb=4096)
    assert "largest free 0 MB" in explain(snapshot(over), request()).user_message()


@pytest.mark.parametrize(
    ("fields", "vcpus", "fits"),
    [
        ({"vcpus": 4, "cpu_ratio": 4.0, "allocated_vcpus": 14}, 2, True),  # 16 - 14 = 2
        ({"vcpus": 4, "cpu_ratio": 4.0, "allocated_vcpus": 14}, 3, False),
        ({"vcpus": 3, "cpu_ratio": 1.5, "allocated_vcpus": 0}, 4, True),  # int(4.5) = 4
        ({"vcpus": 3, "cpu_ratio": 1.5, "allocated_vcpus": 0}, 5, False),
        ({"vcpus": 8, "cpu_ratio": 0.5, "allocated_vcpus": 0}, 5, False),  # reserve half
    ],
)
def test_cpu_ratio(fields: dict[str, Any], vcpus: int, fits: bool) -> None:
    assert (verdict(host("a", **fields), request(vcpus=vcpus)) is None) is fits


def test_ram_and_disk_ratios() -> None:
    roomy = host("a", ram_mb=1000, ram_ratio=1.5, disk_gb=100, disk_ratio=0.9)
    assert verdict(roomy, request(ram_mb=1500, disk_gb=90)) is None
    assert verdict(roomy, request(ram_mb=1501, disk_gb=90)) == "not enough RAM"
    assert verdict(roomy, request(ram_mb=1500, disk_gb=91)) == "not enough disk"


def test_instance_limit_per_host_and_by_default() -> None:
    assert verdict(host("a", max_instances=2, instances=2), request()) == "at its instance limit"
    assert verdict(host("a", max_instances=2, instances=1), request()) is None
    capped = Config(default_max_instances=3)
    assert verdict(host("a", instances=3), request(), capped) == "at its instance limit"
    assert verdict(host("a", instances=3), request()) is None  # unlimited by default
    assert verdict(host("a", instances=5, max_instances=10), request(), capped) is None


def test_aggregate_extra_specs() -> None:
    ssd = host("a", aggregate_metadata={"ssd": "true", "cores": "16"})
    plain = host("b")
    for specs in (
        {"aggregate:ssd": "true"},
        {"ssd": "true"},
        {"aggregate_instance_extra_specs:ssd": "true"},
        {"aggregate:cores": ">= 8", "hw:cpu_policy": "dedicated"},
    ):
        assert verdict(ssd, request(extra_specs=specs)) is None, specs
    assert verdict(ssd, request(extra_specs={"aggregate:ssd": "false"})) == (
        "flavor extra specs not met"
    )
    assert verdict(plain, request(extra_specs={"ssd": "true"})) == "flavor extra specs not met"
    assert verdict(plain, request(extra_specs={"hw:cpu_policy": "dedicated"})) is None
    assert verdict(plain, request(extra_specs={"quota:disk_read": "1", "trait:X": "y"})) is None


def test_which_extra_specs_concern_aggregates() -> None:
    specs = {"aggregate:a": "1", "b": "2", "hw:c": "3", "aggregate:": "4", "resources:d": "5"}
    assert list(aggregate_specs(specs)) == [("a", "1"), ("b", "2")]


@pytest.mark.parametrize(
    ("actual", "wanted", "matches"),
    [
        ("true", "true", True),
        ("true", "True", False),
        ("gold", "<or> silver <or> gold", True),
        ("bronze", "<or> silver <or> gold", False),
        ("nvme-ssd", "<in> ssd", True),
        ("hdd", "<in> ssd", False),
        ("16", ">= 8", True),
        ("4", ">= 8", False),
        ("8", "= 8", True),  # Nova: "=" on numbers means at least
        ("9", "= 8", True),
        ("7", "= 8", False),
        ("8", "== 8.0", True),
        ("8", "!= 8", False),
        ("4", "<= 8", True),
        ("many", ">= 8", False),  # not a number: no match, no error
        ("abc", "s== abc", True),
        ("abd", "s> abc", True),
        ("abc", "s!= abc", False),
        ("x", ">=", False),  # an operator with nothing to compare
    ],
)
def test_extra_spec_operators(actual: str, wanted: str, matches: bool) -> None:
    assert spec_matches(actual, wanted) is matches


def test_hard_affinity_and_anti_affinity() -> None:
    three = hosts(3)
    snap = snapshot(three)
    near = ServerGroupView("g", "web", "affinity", frozenset({"id-node-2"}))
    plan = schedule(snap, request(group=near))
    assert placed_on(plan) == ["node-2"]
    assert explain(snap, request(group=near)).user_message() == "1 of 3 hosts fit: 2 affinity"
    apart = ServerGroupView("g", "web", "anti-affinity", frozenset({"id-node-1", "id-node-3"}))
    assert placed_on(schedule(snap, request(group=apart))) == ["node-2"]
    new = ServerGroupView("g", "web", "affinity")
    assert placed_on(schedule(snap, request(group=new))) == ["node-1"]  # runs nowhere yet
    elsewhere = ServerGroupView("g", "web", "affinity", frozenset({"id-gone"}))
    assert explain(snap, request(group=elsewhere)).user_message() == "0 of 3 hosts fit: 3 affinity"


def test_requirements_filter() -> None:
    loaded = host("a", metrics={"LOAD1": 9.0})
    assert verdict(loaded, request(requirements="LOAD1 < 4")) == "REQUIREMENTS not met"
    assert verdict(loaded, request(requirements="LOAD1 < 10")) is None
    assert verdict(loaded, request(requirements="GPU > 0")) == "REQUIREMENTS not met"


def test_requirements_on_built_in_attributes() -> None:
    one = host(
        "node-7",
        id="h7",
        zone="eu-1",
        driver="kvm",
        arch="amd64",
        accelerated=True,
        vcpus=8,
        allocated_vcpus=2,
        ram_mb=4096,
        allocated_ram_mb=1024,
        disk_gb=50,
        instances=3,
        metrics={"HOSTNAME": "shadowed", "FREE_VCPUS": 100},
    )
    for text in (
        'HOSTNAME = "node-*"',
        'ZONE = "eu-1"',
        'ARCH = "x86_64"',
        'HYPERVISOR = "qemu"',
        "ACCELERATED = 1",
        "FREE_VCPUS = 6",
        "FREE_RAM_MB = 3072",
        "FREE_DISK_GB = 50",
        "INSTANCES = 3",
    ):
        assert verdict(one, request(requirements=text)) is None, text


# --- the order of reasons, and the messages ----------------------------------------------


def test_a_host_is_counted_once_under_its_first_reason() -> None:
    hopeless = host("a", enabled=False, state="error", zone="x", ram_mb=1, image_kinds={"rootfs"})
    nofit = explain(snapshot(hopeless), request(zone="y", image_kinds=("disk",)))
    assert nofit.user_message() == "0 of 1 hosts fit: 1 disabled"
    assert [(r.reason, r.count) for r in nofit.reasons] == [("disabled", 1)]


def twelve_hosts() -> tuple[list[HostView], Request]:
    full = [
        host(f"node-{i:02d}", ram_mb=4096, allocated_ram_mb=4096 - 128 * i) for i in range(1, 9)
    ]
    off = [host(f"node-{i:02d}", enabled=False) for i in range(9, 12)]
    taken = host("node-12")
    group = ServerGroupView("g", "db", "anti-affinity", frozenset({taken.id}))
    return [*full, *off, taken], request(ram_mb=2048, group=group)


def test_the_user_message_aggregates_without_host_names() -> None:
    all_hosts, wanted = twelve_hosts()
    message = explain(snapshot(all_hosts), wanted).user_message()
    assert message == (
        "0 of 12 hosts fit: 8 not enough RAM (need 2048 MB, largest free 1024 MB), "
        "3 disabled, 1 anti-affinity"
    )
    assert "node" not in message


def test_the_admin_message_names_the_hosts_with_a_cap() -> None:
    all_hosts, wanted = twelve_hosts()
    assert explain(snapshot(all_hosts), wanted).admin_message() == (
        "0 of 12 hosts fit: 8 not enough RAM (need 2048 MB, largest free 1024 MB), "
        "3 disabled, 1 anti-affinity; "
        "not enough RAM: node-01, node-02, node-03, node-04, node-05, … (+3 more); "
        "disabled: node-09, node-10, node-11; anti-affinity: node-12"
    )


def test_a_plan_that_places_nothing_carries_the_explanation() -> None:
    all_hosts, wanted = twelve_hosts()
    plan = schedule(snapshot(all_hosts), wanted)
    assert plan.placements == ()
    assert plan.unplaced is not None
    assert plan.unplaced.user_message().startswith("0 of 12 hosts fit: 8 not enough RAM")


def test_no_hosts_at_all() -> None:
    expected = "no compute hosts: join one with `nubes host token create` and `nubes agent join`"
    plan = schedule(snapshot(), request())
    assert plan.unplaced is not None
    assert plan.unplaced.user_message() == expected
    assert plan.unplaced.admin_message() == expected


def test_explain_counts_the_hosts_that_fit() -> None:
    nofit = explain(snapshot(hosts(3), host("z", enabled=False)), request())
    assert nofit.fit == 3
    assert nofit.user_message() == "3 of 4 hosts fit: 1 disabled"
    assert nofit.per_host == {"z": "disabled"}
