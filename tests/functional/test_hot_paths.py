"""The boot+delete hot path's shortcuts keep the behaviour they replace: quota upserts, the
scheduler snapshot taking this process's releases, plain-statement instance writes guarded by
the state they read, batched events, and the agents' desired state read without an ORM session
when the host has no networking."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from nubes.compute import instances as instances_module
from nubes.compute import placement
from nubes.compute.instances import InstanceService
from nubes.compute.placement import HostChange, HostSnapshots
from nubes.config import SchedulerSettings
from nubes.domain.context import RequestContext
from nubes.domain.errors import GenerationConflict, QuotaExceeded
from nubes.identity import quotas
from nubes.network import NicRequest, allocate_instance_ports, bind_instance_ports
from nubes.network.desired import networked
from nubes.store import events, inline
from nubes.store.cas import compare_and_swap, update_if
from nubes.store.models import Event, Host, Instance, QuotaUsage, Router
from tests.functional.helpers import make_project
from tests.functional.test_networks import network, subnet
from tests.functional.test_networks_hosts import add_host

ADMIN = RequestContext.system()


@pytest.fixture
def image(cloud: Any) -> str:
    return upload(cloud, "tiny", visibility="public")


def upload(cloud: Any, name: str, **body: Any) -> str:
    r = cloud.client.post("/v1/images", json={"name": name, **body}, headers=cloud.admin)
    assert r.status_code == 201, r.text
    image_id = str(r.json()["id"])
    r = cloud.client.put(
        f"/v1/images/{image_id}/file", params={"kind": "disk"}, content=b"x" * 64,
        headers=cloud.admin,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return image_id


@pytest.fixture
def host(cloud: Any) -> dict[str, str]:
    """A joined, monitored host, as its agent sees it: its id and the credential's header."""
    token = cloud.client.post("/v1/host-tokens", json={}, headers=cloud.admin).json()["token"]
    facts = {"driver": "fake", "vcpus": 8, "ram_mb": 8192, "disk_gb": 100}
    r = cloud.client.post(
        "/v1/agent/join",
        json={"token": token, **facts, "capabilities": {"image_kinds": ["disk", "rootfs"]}},
    )
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['credential']}"}
    assert cloud.client.post("/v1/agent/heartbeat", json={}, headers=headers).status_code == 200
    return {"id": r.json()["host_id"], **headers}


def agent_headers(host: dict[str, str]) -> dict[str, str]:
    return {"Authorization": host["Authorization"]}


def boot(cloud: Any, name: str = "vm", **body: Any) -> dict[str, Any]:
    r = cloud.client.post(
        "/v1/servers",
        json={"name": name, "image": "tiny", "flavor": "m1.tiny", "networks": "none", **body},
        headers=cloud.admin,
    )
    assert r.status_code == 202, r.text
    return dict(r.json()["servers"][0])


def report(cloud: Any, host: dict[str, str], instance_id: str, **body: Any) -> dict[str, Any]:
    r = cloud.client.post(
        f"/v1/agent/instances/{instance_id}/report", json=body, headers=agent_headers(host)
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def desired(cloud: Any, host: dict[str, str]) -> dict[str, Any]:
    r = cloud.client.get("/v1/agent/desired", headers=agent_headers(host))
    assert r.status_code == 200, r.text
    return dict(r.json())


def row_of(cloud: Any, instance_id: str) -> Instance:
    with cloud.services.db.read() as session:
        row = session.get(Instance, instance_id)
        assert row is not None
        return row


def events_of(cloud: Any, resource_id: str) -> list[str]:
    with cloud.services.db.read() as session:
        return list(
            session.scalars(
                select(Event.kind).where(Event.resource_id == resource_id).order_by(Event.id)
            )
        )


def usage(cloud: Any, project_id: str) -> dict[str, int]:
    with cloud.services.db.read() as session:
        return quotas.usage(session, project_id)


# -- quotas -------------------------------------------------------------------------------


def test_charge_refuses_an_amount_over_the_limit_on_its_first_use(cloud: Any) -> None:
    """The upsert makes a missing row with the amount: the limit must be checked first."""
    project = make_project(cloud, cloud.admin, "q1")["id"]
    db, defaults = cloud.services.db, {"instances": 2}
    first_use = "instances: this project uses 0 of 2, asked for 3 more"
    with pytest.raises(QuotaExceeded, match=first_use), db.transaction() as session:
        quotas.charge(session, project, {"instances": 3}, defaults)
    assert usage(cloud, project)["instances"] == 0
    with db.transaction() as session:
        quotas.charge(session, project, {"instances": 2}, defaults)
    with pytest.raises(QuotaExceeded, match="uses 2 of 2, asked for 1 more"), db.transaction() as s:
        quotas.charge(s, project, {"instances": 1}, defaults)
    with db.transaction() as session:
        quotas.release(session, project, {"instances": 1})
        quotas.charge(session, project, {"instances": 1}, defaults)
    assert usage(cloud, project)["instances"] == 2


def test_charge_names_the_first_resource_that_does_not_fit_and_is_all_or_nothing(
    cloud: Any,
) -> None:
    project = make_project(cloud, cloud.admin, "q2")["id"]
    db, defaults = cloud.services.db, {"cores": 4, "instances": 10, "ram": -1}
    with db.transaction() as session:
        quotas.charge(session, project, {"cores": 3, "instances": 1}, defaults)
    # cores (sorted first) no longer fits; instances alone would not fit either
    asked = {"instances": 11, "cores": 2, "ram": 1 << 40}
    cores = "cores: this project uses 3 of 4, asked for 2"
    with pytest.raises(QuotaExceeded, match=cores), db.transaction() as session:
        quotas.charge(session, project, asked, defaults)
    # ram (unlimited, 64-bit) and instances fit, cores does not: nothing stays charged
    asked = {"instances": 1, "cores": 2, "ram": 1 << 40}
    with pytest.raises(QuotaExceeded, match="for cores"), db.transaction() as session:
        quotas.charge(session, project, asked, defaults)
    used = usage(cloud, project)
    assert (used["cores"], used["instances"], used["ram"]) == (3, 1, 0)
    with db.transaction() as session:
        quotas.charge(session, project, {"ram": 1 << 40, "cores": 1}, defaults)
        quotas.release(session, project, {"cores": 4, "instances": 1, "ram": 1 << 40})
    used = usage(cloud, project)
    assert (used["cores"], used["instances"], used["ram"]) == (0, 0, 0)


def test_charge_counts_per_user_resources_per_user(cloud: Any) -> None:
    project = make_project(cloud, cloud.admin, "q3")["id"]
    db, defaults = cloud.services.db, {"key_pairs": 1}
    with db.transaction() as session:
        quotas.charge(session, project, {"key_pairs": 1}, defaults, user_id="alice")
        quotas.charge(session, project, {"key_pairs": 1}, defaults, user_id="bob")
    with pytest.raises(QuotaExceeded, match="this user uses 1 of 1"), db.transaction() as s:
        quotas.charge(s, project, {"key_pairs": 1}, defaults, user_id="bob")
    with db.transaction() as session:
        quotas.release(session, project, {"key_pairs": 1}, user_id="alice")
        rows = session.execute(
            select(QuotaUsage.user_id, QuotaUsage.in_use).where(QuotaUsage.project_id == project)
        ).all()
    assert sorted(rows) == [("alice", 0), ("bob", 1)]


# -- the scheduler's snapshot and releases -------------------------------------------------


@pytest.fixture
def slow_snapshots(cloud: Any) -> Iterator[HostSnapshots]:
    """A snapshot that refreshes only when a claim loses (the tests' settings refresh on
    every placement, which would hide whether a release reached the snapshot)."""
    settings = cloud.services.settings.model_copy(
        update={"scheduler": SchedulerSettings(refresh_seconds=60)}
    )
    instances: InstanceService = cloud.services.instances
    kept, instances.snapshots = instances.snapshots, HostSnapshots(settings)
    yield instances.snapshots
    instances.snapshots = kept


def test_a_release_reaches_the_snapshot_so_the_next_claim_does_not_lose(
    cloud: Any, image: str, host: dict[str, str], slow_snapshots: HostSnapshots,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    lost: list[str] = []
    swap = placement.compare_and_swap

    def counting(*args: Any, **kwargs: Any) -> int:
        try:
            return swap(*args, **kwargs)
        except GenerationConflict:
            lost.append(args[2])
            raise

    monkeypatch.setattr(placement, "compare_and_swap", counting)
    first = boot(cloud, "vm1")
    report(cloud, host, first["id"], power="running")
    assert cloud.client.delete(f"/v1/servers/{first['id']}", headers=cloud.admin).status_code == 202
    report(cloud, host, first["id"], power="absent")
    assert row_of(cloud, first["id"]).state == "deleted"
    second = boot(cloud, "vm2")
    assert second["state"] == "scheduled"
    assert lost == []  # the release bumped the generation; the snapshot knew
    with cloud.services.db.read() as session:
        stored = session.get(Host, host["id"])
        assert stored is not None
        view = slow_snapshots.current(session).host(host["id"])
    assert view is not None
    assert (view.generation, view.allocated_vcpus, view.instances) == (
        stored.generation, stored.allocated_vcpus, stored.instance_count,
    )  # fmt: skip
    assert (stored.allocated_vcpus, stored.instance_count) == (1, 1)


def test_a_create_brings_the_snapshots_pending_writes_in_before_its_write_turn(
    cloud: Any, image: str, host: dict[str, str], slow_snapshots: HostSnapshots,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Merging this process's claims into the snapshot rebuilds columns: work that every
    writer of every worker would wait for if it were done holding the write turn."""
    merged_holding_the_turn: list[bool] = []
    merge = HostSnapshots._merge

    def watched(self: HostSnapshots) -> None:
        merged_holding_the_turn.append(cloud.services.db.holds_write_turn())
        merge(self)

    monkeypatch.setattr(HostSnapshots, "_merge", watched)
    boot(cloud, "vm1")  # its claim is pending in the snapshot
    merged_holding_the_turn.clear()
    second = boot(cloud, "vm2")
    assert second["state"] == "scheduled"
    assert merged_holding_the_turn == [False]


def test_the_snapshot_takes_a_write_only_onto_the_version_it_was_made_from(
    cloud: Any, host: dict[str, str], slow_snapshots: HostSnapshots
) -> None:
    with cloud.services.db.read() as session:
        before = slow_snapshots.current(session).host(host["id"])
    assert before is not None

    def change(generation: int, vcpus: int) -> HostChange:
        return HostChange(host["id"], generation, vcpus, 0, 0, 0)

    # made from a version the snapshot has not seen: another write came between
    slow_snapshots.applied([change(before.generation + 2, 5)])
    with cloud.services.db.read() as session:
        view = slow_snapshots.current(session).host(host["id"])
    assert view == before
    slow_snapshots.applied([change(before.generation + 1, 3), change(before.generation + 2, 7)])
    with cloud.services.db.read() as session:
        view = slow_snapshots.current(session).host(host["id"])
    assert view is not None
    assert (view.generation, view.allocated_vcpus) == (before.generation + 2, 7)


def test_release_never_goes_below_zero_and_bumps_the_generation(
    cloud: Any, host: dict[str, str]
) -> None:
    with cloud.services.db.transaction() as session:
        generation = session.scalar(select(Host.generation).where(Host.id == host["id"]))
        assert generation is not None
        compare_and_swap(session, Host, host["id"], generation, {"allocated_vcpus": 2})
        change = placement.release(session, host["id"], vcpus=4, ram_mb=64, disk_gb=1)
        assert placement.release(session, "no-such-host", 1, 1, 1) is None
    assert change == HostChange(host["id"], generation + 2, 0, 0, 0, 0)
    with cloud.services.db.read() as session:
        stored = session.get(Host, host["id"])
        assert stored is not None
        assert (stored.generation, stored.allocated_vcpus, stored.instance_count) == (
            generation + 2, 0, 0,
        )  # fmt: skip


# -- instance writes --------------------------------------------------------------------


def test_a_report_that_changes_nothing_writes_nothing(
    cloud: Any, image: str, host: dict[str, str]
) -> None:
    s = boot(cloud)
    assert report(cloud, host, s["id"], power="running") == {"known": True}
    running = row_of(cloud, s["id"])
    assert (running.state, running.task) == ("running", None)
    seen = events_of(cloud, s["id"])
    assert seen == [
        "instance.created", "instance.scheduled", "instance.building", "instance.booting",
        "instance.running",
    ]  # fmt: skip
    report(cloud, host, s["id"], power="running")
    assert row_of(cloud, s["id"]).updated_at == running.updated_at
    assert events_of(cloud, s["id"]) == seen


def test_a_concurrent_change_refuses_the_report_and_rolls_it_back(
    cloud: Any, image: str, host: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = boot(cloud)
    seen = events_of(cloud, s["id"])
    observed = InstanceService._observed

    def raced(self: InstanceService, session: Any, row: Instance, *args: Any) -> None:
        observed(self, session, row, *args)
        # another controller moved the instance between this report's read and its write
        session.execute(update(Instance).where(Instance.id == row.id).values(state="error"))

    monkeypatch.setattr(InstanceService, "_observed", raced)
    r = cloud.client.post(
        f"/v1/agent/instances/{s['id']}/report", json={"power": "running"},
        headers=agent_headers(host),
    )  # fmt: skip
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "nubes.store.generation_conflict"
    assert row_of(cloud, s["id"]).state == "scheduled"
    assert events_of(cloud, s["id"]) == seen


def test_delete_writes_the_row_once_and_returns_it(
    cloud: Any, image: str, host: dict[str, str]
) -> None:
    s = boot(cloud, metadata={"k": "v"})
    r = cloud.client.delete(f"/v1/servers/{s['id']}", headers=cloud.admin)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["state"], body["task"], body["desired_power"]) == ("deleting", "delete", "deleted")
    stored = row_of(cloud, s["id"])
    assert (stored.state, stored.task, stored.instance_metadata) == (
        "deleting",
        "delete",
        {"k": "v"},
    )
    assert datetime.fromisoformat(body["updated_at"]) == stored.updated_at > stored.created_at
    assert events_of(cloud, s["id"])[-1] == "instance.deleting"


def test_deleting_an_instance_that_never_had_a_host_finishes_at_once(
    cloud: Any, image: str, host: dict[str, str]
) -> None:
    r = cloud.client.patch(f"/v1/hosts/{host['id']}", json={"enabled": False}, headers=cloud.admin)
    assert r.status_code == 200, r.text
    s = boot(cloud)
    assert (s["state"], s["host_id"]) == ("error", None)
    project = row_of(cloud, s["id"]).project_id
    assert usage(cloud, project)["instances"] == 1
    r = cloud.client.delete(f"/v1/servers/{s['id']}", headers=cloud.admin)
    assert r.status_code == 202, r.text
    assert (r.json()["state"], r.json()["task"]) == ("deleted", None)
    assert row_of(cloud, s["id"]).state == "deleted"
    assert usage(cloud, project)["instances"] == 0


def test_update_if_names_columns_by_attribute_and_checks_the_guard(
    cloud: Any, image: str, host: dict[str, str]
) -> None:
    s = boot(cloud)
    with cloud.services.db.transaction() as session:
        done = update_if(
            session, Instance, s["id"], {"state": "scheduled"}, {"instance_metadata": {"a": "b"}}
        )
        missed = update_if(session, Instance, s["id"], {"state": "running"}, {"name": "other"})
    assert (done, missed) == (True, False)
    stored = row_of(cloud, s["id"])
    assert (stored.instance_metadata, stored.name) == ({"a": "b"}, "vm")


def test_compare_and_swap_still_takes_sql_expressions(cloud: Any, host: dict[str, str]) -> None:
    with cloud.services.db.transaction() as session:
        generation = session.scalar(select(Host.generation).where(Host.id == host["id"]))
        assert generation is not None
        compare_and_swap(
            session, Host, host["id"], generation, {"instance_count": Host.instance_count + 5}
        )
        with pytest.raises(GenerationConflict):
            compare_and_swap(session, Host, host["id"], generation, {"instance_count": 0})
    with cloud.services.db.read() as session:
        assert session.scalar(select(Host.instance_count).where(Host.id == host["id"])) == 5


def test_create_finds_an_image_by_id_before_name_and_the_newest_of_a_name(
    cloud: Any, image: str, host: dict[str, str]
) -> None:
    impostor = upload(cloud, image)  # named like the first image's id, and newer
    assert boot(cloud, "by-id", image=image)["image_id"] == image
    assert boot(cloud, "by-its-id", image=impostor)["image_id"] == impostor
    newest = upload(cloud, "tiny")
    assert boot(cloud, "newest", image="tiny")["image_id"] == newest


# -- events --------------------------------------------------------------------------------


def test_batched_events_go_in_in_order_or_not_at_all(cloud: Any) -> None:
    db = cloud.services.db
    with db.transaction() as session, events.batch(session):
        for step in ("one", "two", "three"):
            events.record(session, ADMIN, f"test.{step}", "test", "batched")
        with events.batch(session):  # nested: the outer one writes
            events.record(session, ADMIN, "test.four", "test", "batched")
        waiting = select(func.count()).where(Event.resource_id == "batched")
        assert session.scalar(waiting) == 0  # not yet written
    assert events_of(cloud, "batched") == ["test.one", "test.two", "test.three", "test.four"]

    def failing() -> None:
        with db.transaction() as session, events.batch(session):
            events.record(session, ADMIN, "test.lost", "test", "failed")
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        failing()
    assert events_of(cloud, "failed") == []
    with db.transaction() as session:  # outside a batch: at once
        events.record(session, ADMIN, "test.now", "test", "direct")
        assert session.scalar(select(func.count()).where(Event.resource_id == "direct")) == 1


# -- the agents' desired state --------------------------------------------------------------


def test_networked_tells_a_bare_host_from_one_with_ports_routers_or_nics(cloud: Any) -> None:
    bare = add_host(cloud, "bare", "192.0.2.1")
    wired = add_host(cloud, "wired", "192.0.2.2")
    routed = add_host(cloud, "routed", "192.0.2.3")
    network(cloud, cloud.admin, "n1")
    subnet(cloud, cloud.admin, "n1-subnet", "n1", "10.9.0.0/24")
    r = cloud.client.post("/v1/routers", json={"name": "r1"}, headers=cloud.admin)
    assert r.status_code == 201, r.text
    with cloud.services.db.transaction() as session:  # wherever it was placed: there
        session.execute(update(Router).values(host_id=routed))
    ctx = cloud.services.auth.validate(cloud.admin["X-Auth-Token"])
    with cloud.services.db.transaction() as session:
        allocate_instance_ports(session, ctx, "unbound-vm", "u", [NicRequest(network="n1")])
        allocate_instance_ports(session, ctx, "bound-vm", "b", [NicRequest(network="n1")])
        bind_instance_ports(session, "bound-vm", wired)
    with cloud.services.db.connection() as connection:
        assert not networked(connection, bare, [])
        assert not networked(connection, bare, ["some-instance"])
        assert networked(connection, bare, ["unbound-vm"])  # a NIC not bound anywhere yet
        assert networked(connection, wired, [])
        assert networked(connection, routed, [])


def test_desired_state_without_networking_lists_instances_with_their_images(
    cloud: Any, image: str, host: dict[str, str]
) -> None:
    s = boot(cloud, user_data="#!/bin/sh\n", metadata={"role": "web"}, config_drive=True)
    body = desired(cloud, host)
    assert body["networks"]["ports"] == []
    assert body["networks"]["networks"] == []
    assert body["networks"]["metadata_url"] == "http://testserver"
    (one,) = body["instances"]
    assert (one["id"], one["hostname"], one["nics"], one["metadata"]) == (
        s["id"], "vm", [], {"role": "web"},
    )  # fmt: skip
    checksum = one["image"].pop("checksum")
    assert one["image"] == {"id": image, "kind": "disk", "format": "qcow2", "size": 64}
    assert len(checksum) == 64
    assert "openstack/latest/meta_data.json" in one["config_drive"]
    report(cloud, host, s["id"], power="running")
    cloud.client.delete(f"/v1/servers/{s['id']}", headers=cloud.admin)
    (gone,) = desired(cloud, host)["instances"]
    assert (gone["desired_power"], gone["state"]) == ("deleted", "deleting")
    report(cloud, host, s["id"], power="absent")
    assert desired(cloud, host)["instances"] == []


def test_a_due_snapshot_refresh_reads_the_hosts_before_the_write_lock(
    cloud, host, image, monkeypatch
):
    """Every heartbeat flush changes host rows, so the once-a-second refresh reads hundreds at
    scale: a create does it before its write transaction, not while every writer waits."""
    snapshots = cloud.services.instances.snapshots
    db = cloud.services.db
    under_lock: list[bool] = []
    refresh = snapshots.refresh

    def spying(session: Any) -> Any:
        under_lock.append(db.holds_write_turn())  # by this thread
        return refresh(session)

    monkeypatch.setattr(cloud.services.settings.scheduler, "refresh_seconds", 60.0)
    snapshots.refresh = spying  # type: ignore[method-assign]
    snapshots._read_at = 0.0  # due
    server = boot(cloud)
    assert server["state"] == "scheduled"
    assert under_lock == [False]
    snapshots._read_at = 0.0
    snapshots._refreshing.acquire()  # another thread is refreshing: the create goes on
    try:
        assert boot(cloud, "vm2")["state"] == "scheduled"
    finally:
        snapshots._refreshing.release()
    assert under_lock == [False]


def test_a_create_reads_flavor_image_and_keypair_before_the_write_lock(cloud, host, image):
    db = cloud.services.db
    seen: list[tuple[str, bool]] = []
    module = instances_module
    find_flavor, find_image = module.find_flavor, module._find_image

    def flavor_spy(session: Any, ctx: Any, ref: str) -> Any:
        seen.append(("flavor", db.holds_write_turn()))
        return find_flavor(session, ctx, ref)

    def image_spy(session: Any, ctx: Any, ref: str) -> Any:
        seen.append(("image", db.holds_write_turn()))
        return find_image(session, ctx, ref)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "find_flavor", flavor_spy)
        patch.setattr(module, "_find_image", image_spy)
        assert boot(cloud)["state"] == "scheduled"
        r = cloud.client.post(
            "/v1/servers",
            json={"name": "x", "image": "tiny", "flavor": "no-such", "networks": "none"},
            headers=cloud.admin,
        )
    assert r.status_code == 404
    assert seen == [("flavor", False), ("image", False), ("flavor", False)]


def test_the_boot_and_delete_path_runs_inline_on_sqlite_and_in_threads_elsewhere(
    cloud: Any, host: dict[str, str], image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the hot requests run on the event loop's thread (nubes.store.inline), with no
    thread hop; on PostgreSQL, whose statements wait on the network, in worker threads."""
    services = cloud.services
    ran: dict[str, bool] = {}

    def spy(owner: Any, name: str) -> None:
        real = getattr(owner, name)

        def spying(*args: Any, **kwargs: Any) -> Any:
            ran[name] = inline.suspendable()
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, spying)

    spy(services.auth, "validate")
    spy(services.hosts, "authenticate")
    spy(services.instances, "create")
    spy(services.instances, "report")
    spy(services.instances, "delete")
    services.hosts._verified.clear()  # the host's credential is read again
    server = boot(cloud)
    report(cloud, host, server["id"], power="running")
    assert (
        cloud.client.delete(f"/v1/servers/{server['id']}", headers=cloud.admin).status_code == 202
    )
    expected = services.db.dialect == "sqlite"
    assert ran == dict.fromkeys(
        ["validate", "create", "authenticate", "report", "delete"], expected
    )


def test_a_refresh_reads_again_only_the_hosts_changed_since_it_read_them(cloud, host, monkeypatch):
    """Rows changed within REFRESH_OVERLAP of the newest seen are looked at again (a write may
    commit late); their updated_at and generation tell which did change since, and only those
    are read whole (their JSON decoded) and rebuilt."""
    snapshots = HostSnapshots(cloud.services.settings)
    viewed: list[str] = []
    view = placement._view

    def counted(row: Any, scheduling: Any) -> Any:
        viewed.append(row.id)
        return view(row, scheduling)

    monkeypatch.setattr(placement, "_view", counted)
    db = cloud.services.db
    with db.read() as session:
        snapshots.refresh(session)
    assert host["id"] in viewed
    viewed.clear()
    with db.read() as session:
        snapshots.refresh(session)  # the host is within the overlap, unchanged
    assert host["id"] not in viewed
    with db.transaction() as session:  # updated_at moves with every update
        session.execute(update(Host).where(Host.id == host["id"]).values(metrics={"load": 3.0}))
    with db.read() as session:
        snapshot = snapshots.refresh(session)
    assert viewed == [host["id"]]
    view_now = snapshot.host(host["id"])
    assert view_now is not None
    assert view_now.metrics == {"load": 3.0}
    with db.transaction() as session:  # a claim: the generation moves too
        session.execute(
            update(Host).where(Host.id == host["id"]).values(generation=Host.generation + 1)
        )
    with db.read() as session:
        snapshots.refresh(session)
    assert viewed == [host["id"]] * 2
