"""The scheduler through the API: zones, aggregates' metadata, server groups, REQUIREMENTS and
RANK over reported metrics, batches, instance caps, explanations, and stale snapshots.

Hosts join and heartbeat through /v1/agent like real agents, with the capacity and metrics
each test needs; no agent runs (placement is all these tests look at)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from nubes.api.services import Services
from nubes.compute.notify import Peers
from nubes.store.models import Host
from tests.functional.helpers import error_of, make_project, make_user


def join(cloud: Any, name: str, *, vcpus: int = 4, ram_mb: int = 8192, **metrics: Any) -> str:
    admin = cloud.admin
    token = cloud.client.post("/v1/host-tokens", json={}, headers=admin).json()["token"]
    facts = {
        "token": token,
        "name": name,
        "driver": "fake",
        "vcpus": vcpus,
        "ram_mb": ram_mb,
        "disk_gb": 100,
        "capabilities": {"image_kinds": ["disk", "rootfs"]},
    }
    r = cloud.client.post("/v1/agent/join", json=facts)
    assert r.status_code == 200, r.text
    credential = r.json()["credential"]
    beat(cloud, credential, **metrics)
    return str(credential)


def beat(cloud: Any, credential: str, **metrics: Any) -> None:
    r = cloud.client.post(
        "/v1/agent/heartbeat",
        json={"metrics": metrics},
        headers={"Authorization": f"Bearer {credential}"},
    )
    assert r.status_code == 200, r.text


@pytest.fixture
def image(cloud):
    admin = cloud.admin
    r = cloud.client.post(
        "/v1/images", json={"name": "tiny", "visibility": "public"}, headers=admin
    )
    image_id = r.json()["id"]
    r = cloud.client.put(
        f"/v1/images/{image_id}/file", params={"kind": "disk"}, content=b"x" * 64, headers=admin
    )
    assert r.status_code == 200, r.text
    cloud.client.patch(
        "/v1/quotas/admin",
        json={"limits": {"instances": -1, "cores": -1, "ram": -1}},
        headers=admin,
    )
    return image_id


def create(cloud: Any, headers: dict[str, str], name: str = "vm", **body: Any) -> list[Any]:
    r = cloud.client.post(
        "/v1/servers",
        json={"name": name, "image": "tiny", "flavor": "m1.tiny", **body},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    return list(r.json()["servers"])


def host_names(cloud: Any) -> dict[str, str]:
    with cloud.services.db.read() as session:
        return {h.id: h.name for h in session.scalars(select(Host))}


def where(cloud: Any, servers: list[Any]) -> list[str | None]:
    """The host each server landed on (read from the store: users never see host ids)."""
    from nubes.store.models import Instance

    names = host_names(cloud)
    with cloud.services.db.read() as session:
        rows = {i.id: i.host_id for i in session.scalars(select(Instance))}
    return [names.get(rows[s["id"]] or "") for s in servers]


def test_requirements_over_a_probe_metric_choose_the_host(cloud, image):
    join(cloud, "busy", MY_RVMS=5)
    join(cloud, "idle", MY_RVMS=0)
    admin = cloud.admin
    assert where(cloud, create(cloud, admin, requirements="MY_RVMS < 1")) == ["idle"]
    assert where(cloud, create(cloud, admin, requirements="MY_RVMS > 1")) == ["busy"]
    [refused] = create(cloud, admin, requirements="MY_RVMS > 100")
    assert refused["state"] == "error"
    assert refused["reason"].startswith("0 of 2 hosts fit: 2 REQUIREMENTS not met")


def test_rank_orders_hosts_and_the_flavor_may_carry_its_own(cloud, image):
    join(cloud, "a", FREE_MEMORY=100)
    join(cloud, "b", FREE_MEMORY=900)
    admin = cloud.admin
    assert where(cloud, create(cloud, admin, rank="FREE_MEMORY")) == ["b"]
    assert where(cloud, create(cloud, admin, rank="-FREE_MEMORY")) == ["a"]
    r = cloud.client.post(
        "/v1/flavors",
        json={
            "name": "pinned",
            "vcpus": 1,
            "ram_mb": 64,
            "disk_gb": 1,
            "extra_specs": {"sched:requirements": 'HOSTNAME = "a*"'},
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    # the flavor's REQUIREMENTS and the instance's both apply
    assert where(cloud, create(cloud, admin, flavor="pinned", rank="FREE_MEMORY")) == ["a"]
    [none] = create(cloud, admin, flavor="pinned", requirements="FREE_MEMORY > 500")
    assert none["state"] == "error"


def test_a_bad_expression_is_refused_at_submission_with_its_position(cloud, image):
    join(cloud, "a")
    r = cloud.client.post(
        "/v1/servers",
        json={"name": "x", "image": "tiny", "flavor": "m1.tiny", "requirements": "FREE_CPU > "},
        headers=cloud.admin,
    )
    assert r.status_code == 400
    message = error_of(r)["message"]
    assert message == "requirements: syntax error at column 12: expected a value after '>'"
    r = cloud.client.post(
        "/v1/servers",
        json={"name": "x", "image": "tiny", "flavor": "m1.tiny", "rank": "FREE_CPU > 3"},
        headers=cloud.admin,
    )
    assert r.status_code == 400
    assert error_of(r)["message"].startswith("rank: ")
    assert cloud.client.get("/v1/servers", headers=cloud.admin).json()["servers"] == []


def test_zones_place_only_on_their_hosts(cloud, image):
    join(cloud, "n1")
    join(cloud, "n2")
    admin = cloud.admin
    r = cloud.client.post(
        "/v1/aggregates", json={"name": "rack2", "availability_zone": "z2"}, headers=admin
    )
    assert r.status_code == 201, r.text
    r = cloud.client.post("/v1/aggregates/rack2/hosts", json={"host": "n2"}, headers=admin)
    assert r.status_code in (200, 201), r.text
    servers = create(cloud, admin, count=3, availability_zone="z2")
    assert where(cloud, servers) == ["n2", "n2", "n2"]
    assert {s["availability_zone"] for s in servers} == {"z2"}
    assert where(cloud, create(cloud, admin, availability_zone="nova")) == ["n1"]
    r = cloud.client.post(
        "/v1/servers",
        json={"name": "x", "image": "tiny", "flavor": "m1.tiny", "availability_zone": "mars"},
        headers=admin,
    )
    assert r.status_code == 404
    assert error_of(r)["message"] == "no availability zone 'mars' (zones: nova, z2)"


def test_flavor_extra_specs_match_aggregate_metadata(cloud, image):
    join(cloud, "plain")
    join(cloud, "fast")
    admin = cloud.admin
    cloud.client.post(
        "/v1/aggregates", json={"name": "ssd", "metadata": {"ssd": "true"}}, headers=admin
    )
    cloud.client.post("/v1/aggregates/ssd/hosts", json={"host": "fast"}, headers=admin)
    cloud.client.post(
        "/v1/flavors",
        json={
            "name": "io",
            "vcpus": 1,
            "ram_mb": 64,
            "disk_gb": 1,
            "extra_specs": {"aggregate:ssd": "true"},
        },
        headers=admin,
    )
    assert where(cloud, create(cloud, admin, flavor="io", count=3)) == ["fast"] * 3


def test_anti_affinity_spreads_a_batch_and_refuses_what_cannot_be_spread(cloud, image):
    for name in ("h1", "h2", "h3"):
        join(cloud, name)
    make_project(cloud, cloud.admin, "p1")
    member = make_user(cloud, cloud.admin, "u1", "p1")
    r = cloud.client.post(
        "/v1/server-groups", json={"name": "apart", "policy": "anti-affinity"}, headers=member
    )
    assert r.status_code == 201, r.text
    cloud.client.patch(
        "/v1/quotas/p1",
        json={"limits": {"instances": 10, "server_group_members": 10}},
        headers=cloud.admin,
    )
    servers = create(cloud, member, count=3, group="apart")
    placed = where(cloud, servers)
    assert sorted(placed) == ["h1", "h2", "h3"]  # type: ignore[type-var]
    [fourth] = create(cloud, member, name="one-more", group="apart")
    assert fourth["state"] == "error"
    assert fourth["reason"] == "0 of 3 hosts fit: 3 anti-affinity"
    # a deleted member frees its host for the group
    r = cloud.client.delete(f"/v1/servers/{servers[0]['id']}", headers=member)
    assert r.status_code == 202, r.text
    _finish_deletes(cloud)  # what the host's agent would report
    [again] = create(cloud, member, name="again", group="apart")
    assert where(cloud, [again]) == [placed[0]]


def _finish_deletes(cloud: Any) -> None:
    """What an agent's report does for an instance it removed."""
    from nubes.compute.instances import Report
    from nubes.store.models import Instance

    with cloud.services.db.read() as session:
        rows = list(session.scalars(select(Instance).where(Instance.state == "deleting")))
        hosts = {h.id: h for h in session.scalars(select(Host))}
    for row in rows:
        cloud.services.instances.report(hosts[row.host_id], row.id, Report(power="absent"))


def test_affinity_keeps_a_group_on_one_host(cloud, image):
    for name in ("h1", "h2"):
        join(cloud, name)
    admin = cloud.admin
    cloud.client.post("/v1/server-groups", json={"name": "t", "policy": "affinity"}, headers=admin)
    first = where(cloud, create(cloud, admin, count=2, group="t"))
    assert len(set(first)) == 1
    assert where(cloud, create(cloud, admin, name="later", group="t")) == first[:1]


def test_a_batch_of_fifty_is_placed_in_one_pass_without_overbooking(cloud, image):
    # 2 vCPUs x 16 = 32 m1.tiny (1 vCPU) per host by vCPU; RAM 512 MB x 1.5 = 768 MB: 1 each
    # ... so size the hosts by RAM instead: 12 x 512 MB x 1.5 ratio = 18 instances of 512 MB
    join(cloud, "a", vcpus=64, ram_mb=6144)
    join(cloud, "b", vcpus=64, ram_mb=6144)
    admin = cloud.admin
    servers = create(cloud, admin, name="batch", count=50)
    placed = where(cloud, servers)
    per_host = {h: placed.count(h) for h in ("a", "b")}
    assert per_host == {"a": 18, "b": 18}  # 6144 x 1.5 / 512
    refused = [s for s in servers if s["state"] == "error"]
    assert len(refused) == 14
    assert refused[0]["reason"].startswith("0 of 2 hosts fit: 2 not enough RAM (need 512 MB")
    with cloud.services.db.read() as session:
        hosts = list(session.scalars(select(Host)))
    assert all(h.allocated_ram_mb <= h.ram_mb * 1.5 for h in hosts)
    assert sorted(h.instance_count for h in hosts) == [18, 18]


def test_a_host_instance_cap_is_a_filter(cloud, image):
    join(cloud, "small")
    admin = cloud.admin
    r = cloud.client.patch("/v1/hosts/small", json={"max_instances": 2}, headers=admin)
    assert r.status_code == 200, r.text
    servers = create(cloud, admin, count=3)
    assert [s["state"] for s in servers] == ["scheduled", "scheduled", "error"]
    assert servers[2]["reason"].startswith("0 of 1 hosts fit: 1 at its instance limit")


def test_each_worker_breaks_ties_from_its_own_share_of_the_hosts(cloud, image, settings):
    # Workers placing at once on equal hosts would all choose the first by name: all but one
    # lose the compare-and-swap and read the hosts again inside the write turn. Each worker
    # of a controller starts its ties at its own share of the name order instead.
    for name in ("n1", "n2", "n3", "n4"):
        join(cloud, name)
    assert where(cloud, create(cloud, cloud.admin, "a")) == ["n1"]
    cloud.services.instances.tie_start = 0.5  # the second of two workers
    # spread: n1 holds one, n2-n4 tie; from half-way through the names, n3 comes first
    assert where(cloud, create(cloud, cloud.admin, "b")) == ["n3"]
    assert where(cloud, create(cloud, cloud.admin, "c")) == ["n4"]
    assert where(cloud, create(cloud, cloud.admin, "d")) == ["n2"]  # round to the start

    peers = Peers(f"test-{time.monotonic_ns()}", 1, 2)
    try:
        for with_peers, share in ((peers, 0.5), (None, 0.0)):  # one worker: by name
            built = Services.build(settings, cloud.services.db, peers=with_peers)
            assert built.instances.tie_start == share
            built.close()
    finally:
        peers.close()


def test_a_stale_snapshot_loses_its_claim_and_replans(cloud, image, monkeypatch):
    """Another controller's claim bumps the host's generation: this process's snapshot does
    not know, its compare-and-swap fails, it re-reads and places correctly."""
    from nubes.store.cas import compare_and_swap

    join(cloud, "only", vcpus=64, ram_mb=1024)  # 1024 x 1.5 / 512 = 3 instances
    admin = cloud.admin
    monkeypatch.setattr(cloud.services.settings.scheduler, "refresh_seconds", 3600.0)
    assert where(cloud, create(cloud, admin)) == ["only"]  # snapshot taken now
    with cloud.services.db.transaction() as session:  # "another controller" takes 2 more
        host = session.scalar(select(Host))
        assert host is not None
        compare_and_swap(
            session,
            Host,
            host.id,
            host.generation,
            {"allocated_ram_mb": host.allocated_ram_mb + 1024, "instance_count": 3},
        )
    [late] = create(cloud, admin, name="late")
    assert late["state"] == "error"
    assert late["reason"].startswith("0 of 1 hosts fit: 1 not enough RAM")


def test_a_lost_claim_reads_again_only_the_host_it_lost(cloud, image, monkeypatch):
    """The usual race: another worker claimed the host this one chose. Reading that host
    again is enough to replan; every changed host is read only after a second loss."""
    from nubes.store.cas import compare_and_swap

    join(cloud, "a")
    join(cloud, "b")
    admin = cloud.admin
    monkeypatch.setattr(cloud.services.settings.scheduler, "refresh_seconds", 3600.0)
    assert where(cloud, create(cloud, admin)) == ["a"]  # the snapshot: a holds 1, b none
    with cloud.services.db.transaction() as session:  # "another worker" claims on b
        host = session.scalar(select(Host).where(Host.name == "b"))
        assert host is not None
        changes = {"allocated_vcpus": 1, "allocated_ram_mb": 512, "allocated_disk_gb": 1}
        compare_and_swap(session, Host, host.id, host.generation, {**changes, "instance_count": 1})
    snapshots = cloud.services.instances.snapshots
    refreshes: list[bool] = []
    refresh = snapshots.refresh
    monkeypatch.setattr(snapshots, "refresh", lambda s: refreshes.append(True) or refresh(s))
    # planned on b (empty, as far as it knew), lost; b read again: a and b tie, a first
    assert where(cloud, create(cloud, admin, name="second")) == ["a"]
    assert refreshes == []


def test_a_claim_rolled_back_after_reaching_the_snapshot_does_not_block_its_host(
    cloud, image, monkeypatch
):
    """A claim applied to the snapshot whose transaction then rolled back leaves a generation
    the database never had, on a row whose updated_at did not move: a refresh by updated_at
    cannot see it, so a lost claim re-reads its hosts by id (else: 8 conflicts, an error)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from sqlalchemy import update

    join(cloud, "only", vcpus=64, ram_mb=8192)
    admin = cloud.admin
    assert where(cloud, create(cloud, admin)) == ["only"]
    snapshots = cloud.services.instances.snapshots
    with cloud.services.db.transaction() as session:  # its last change is long ago
        session.execute(update(Host).values(updated_at=datetime(2001, 1, 1, tzinfo=UTC)))
    with cloud.services.db.read() as session:
        view = snapshots.current(session).host(str(session.scalar(select(Host.id))))
    assert view is not None
    snapshots.claimed([replace(view, generation=view.generation + 1)])  # the phantom
    [second] = create(cloud, admin, name="second")
    assert second["state"] != "error", second.get("reason")
    assert where(cloud, [second]) == ["only"]


def test_a_project_that_still_owns_things_is_refused_not_a_500(cloud, image):
    join(cloud, "h1")
    admin = cloud.admin
    make_project(cloud, admin, "p2")
    member = make_user(cloud, admin, "u2", "p2")
    cloud.client.post("/v1/server-groups", json={"name": "g", "policy": "affinity"}, headers=member)
    [vm] = create(cloud, member, name="vm")
    r = cloud.client.delete("/v1/projects/p2", headers=admin)
    assert r.status_code == 409
    assert error_of(r)["message"] == (
        "project 'p2' still owns 1 instances, 1 server groups; delete them first"
    )
    cloud.client.delete(f"/v1/servers/{vm['id']}", headers=member)
    _finish_deletes(cloud)
    cloud.client.delete("/v1/server-groups/g", headers=member)
    r = cloud.client.delete("/v1/projects/p2", headers=admin)
    assert r.status_code == 204, r.text
