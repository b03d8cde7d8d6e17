"""Snapshots: built once, refreshed with only the rows that changed, and never changed in
place. A refreshed snapshot must schedule exactly like one built from scratch."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from nubes.scheduler import Config, HostView, Snapshot, explain, schedule
from tests.unit.scheduler.harness import host, hosts, placed_on, request, snapshot

#: requests that read every kind of column: capacity, strings, metrics, metadata, names
PROBES = (
    request(count=4),
    request(count=3, rank="LOAD1", requirements='ZONE = "a" | GPU = "h100"'),
    request(extra_specs={"ssd": "true"}, requirements='HOSTNAME != "h-1*"'),
    request(vcpus=3, ram_mb=3000, rank="-FREE_VCPUS", requirements="!(LOAD1 > 3)"),
)


def same_behaviour(refreshed: Snapshot, rebuilt: Snapshot) -> None:
    assert len(refreshed) == len(rebuilt)
    assert refreshed.hosts == rebuilt.hosts
    for probe in PROBES:
        for config in (Config(weigher="pack"), Config(weigher="spread")):
            assert schedule(refreshed, probe, config) == schedule(rebuilt, probe, config)
            assert explain(refreshed, probe, config) == explain(rebuilt, probe, config)


def test_updated_replaces_adds_and_removes_without_touching_the_old_one() -> None:
    old = snapshot(hosts(3, ram_mb=4096))
    full = dataclasses.replace(old.host("id-node-1"), allocated_ram_mb=4096)  # type: ignore[arg-type]
    new = old.updated([full, host("node-9", ram_mb=4096)], ["id-node-2"])
    assert [h.name for h in new.hosts] == ["node-1", "node-3", "node-9"]
    assert [h.name for h in old.hosts] == ["node-1", "node-2", "node-3"]
    assert placed_on(schedule(old, request(ram_mb=2048))) == ["node-1"]
    assert placed_on(schedule(new, request(ram_mb=2048))) == ["node-3"]
    assert "id-node-2" in old
    assert "id-node-2" not in new
    assert new.host("id-node-2") is None
    rebuilt = [full, host("node-3", ram_mb=4096), host("node-9", ram_mb=4096)]
    same_behaviour(new, Snapshot.build(rebuilt))


def test_nothing_to_do_returns_the_same_snapshot() -> None:
    snap = snapshot(hosts(2))
    assert snap.updated([], []) is snap
    assert snap.updated([], ["id-unknown"]) is snap


def test_a_host_both_changed_and_removed_is_removed() -> None:
    snap = snapshot(hosts(2)).updated([host("node-1", vcpus=64)], ["id-node-1"])
    assert [h.name for h in snap.hosts] == ["node-2"]


def test_a_rename_moves_the_host_in_name_order() -> None:
    snap = snapshot(host("b"), host("c"))
    renamed = snap.updated([host("z", id="id-b")], [])
    assert [h.name for h in renamed.hosts] == ["c", "z"]
    assert placed_on(schedule(renamed, request())) == ["c"]  # the tie goes to the first name
    assert placed_on(schedule(snap, request())) == ["b"]


def test_rows_freed_by_leaving_hosts_are_reused() -> None:
    snap = snapshot(hosts(4))
    rows = snap.table.rows
    for i in range(10):
        snap = snap.updated(
            [host(f"new-{i}")], [f"id-node-{i + 1}" if i < 4 else f"id-new-{i - 1}"]
        )
    assert snap.table.rows == rows
    assert len(snap) == 4
    same_behaviour(snap, Snapshot.build(snap.hosts))


def test_a_departed_host_is_never_chosen_nor_counted() -> None:
    snap = snapshot(host("a", vcpus=64), host("b", enabled=False)).updated([], ["id-a"])
    plan = schedule(snap, request())
    assert plan.placements == ()
    assert plan.unplaced is not None
    assert plan.unplaced.admin_message() == "0 of 1 hosts fit: 1 disabled; disabled: b"


def test_metrics_and_metadata_that_disappear_are_forgotten() -> None:
    snap = snapshot(
        host("a", metrics={"GPU": "h100", "LOAD1": 1.0}, aggregate_metadata={"ssd": "true"})
    )
    bare = snap.updated([host("a")], [])
    for text in ('GPU = "h100"', "LOAD1 < 2"):
        assert schedule(snap, request(requirements=text)).placements
        assert not schedule(bare, request(requirements=text)).placements
    assert not schedule(bare, request(extra_specs={"ssd": "true"})).placements
    new_metric = bare.updated([host("a", metrics={"TEMP": 40})], [])
    assert schedule(new_metric, request(requirements="TEMP < 50")).placements


def test_the_first_host_can_join_an_empty_snapshot() -> None:
    empty = Snapshot.build([])
    assert len(empty) == 0
    one = empty.updated([host("a", metrics={"X": 1}, aggregate_metadata={"k": "v"})], [])
    assert placed_on(schedule(one, request(requirements="X = 1", extra_specs={"k": "v"}))) == ["a"]


# --- refreshes agree with rebuilding, whatever the sequence --------------------------------

NAMES = [f"h-{i}" for i in range(12)]


@st.composite
def host_views(draw: st.DrawFn) -> HostView:
    ident = draw(st.sampled_from(NAMES))
    metrics: dict[str, float | str] = {}
    if draw(st.booleans()):
        metrics["LOAD1"] = draw(st.sampled_from([0.0, 1.5, 3.0, 7.0]))
    if draw(st.booleans()):
        metrics["GPU"] = draw(st.sampled_from(["h100", "a100"]))
    return host(
        draw(st.sampled_from([ident, ident, f"{ident}-renamed"])),
        id=f"id-{ident}",
        enabled=draw(st.booleans()) or draw(st.booleans()),
        zone=draw(st.sampled_from(["a", "b"])),
        vcpus=draw(st.integers(0, 8)),
        ram_mb=draw(st.sampled_from([1024, 4096, 8192])),
        allocated_ram_mb=draw(st.sampled_from([0, 1024, 3072])),
        metrics=metrics,
        aggregate_metadata=draw(st.sampled_from([{}, {"ssd": "true"}, {"ssd": "false"}])),
    )


steps = st.lists(
    st.tuples(
        st.lists(host_views(), max_size=5),
        st.lists(st.sampled_from([f"id-{n}" for n in NAMES]), max_size=3),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(host_views(), max_size=8), steps)
def test_a_chain_of_refreshes_behaves_like_a_fresh_build(
    initial: list[HostView], changes: list[tuple[list[HostView], list[str]]]
) -> None:
    current = {h.id: h for h in initial}
    snap = Snapshot.build(initial)
    for changed, removed in changes:
        snap = snap.updated(changed, removed)
        current.update((h.id, h) for h in changed)
        for host_id in removed:
            current.pop(host_id, None)
    same_behaviour(snap, Snapshot.build(current.values()))


def test_cached_string_verdicts_follow_hosts_that_join() -> None:
    snap = snapshot(host("node-1"), host("db-1", aggregate_metadata={"ssd": "true"}))
    by_name = request(count=5, requirements='HOSTNAME = "node-*"')
    by_spec = request(count=5, extra_specs={"ssd": "<or> true <or> yes"})
    assert set(placed_on(schedule(snap, by_name))) == {"node-1"}  # verdicts now cached
    assert set(placed_on(schedule(snap, by_spec))) == {"db-1"}
    grown = snap.updated(
        [
            host("node-2"),
            host("web-1"),
            host("db-2", aggregate_metadata={"ssd": "yes"}),
            host("db-3", aggregate_metadata={"ssd": "no"}),
        ],
        [],
    )
    assert set(placed_on(schedule(grown, by_name))) == {"node-1", "node-2"}
    assert set(placed_on(schedule(grown, by_spec))) == {"db-1", "db-2"}
    same_behaviour(grown, Snapshot.build(grown.hosts))


def test_string_tables_forget_names_no_host_has_any_more() -> None:
    snap = snapshot(host("node-0", id="moving"), host("other"))
    wildcard = request(requirements='HOSTNAME = "node-*"')
    for i in range(1, 300):
        snap = snap.updated([host(f"node-{i}", id="moving")], [])
        if i % 50 == 0:
            assert placed_on(schedule(snap, wildcard)) == [f"node-{i}"]
    assert len(snap.table.strings["HOSTNAME"].table.values) < 2 * 2 + 64 + 2
    assert placed_on(schedule(snap, wildcard)) == ["node-299"]
    same_behaviour(snap, Snapshot.build(snap.hosts))


def test_attribute_names_are_the_built_ins_and_what_hosts_report_now() -> None:
    snap = snapshot(host("a", metrics={"LOAD1": 1.0, "GPU": "h100"}), host("b", metrics={"T": 3}))
    names = snap.attribute_names()
    assert {"LOAD1", "GPU", "T", "HOSTNAME", "FREE_RAM_MB", "ACCELERATED"} <= names
    assert "NOPE" not in names
    later = snap.updated([host("a")], ["id-b"])
    assert not {"LOAD1", "GPU", "T"} & later.attribute_names()
