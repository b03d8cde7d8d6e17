"""Host aggregates, availability zones, per-host scheduling settings and their merge
(``effective_settings``), through the API and through the service the scheduler calls."""

from __future__ import annotations

import threading
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import insert, select

from nubes.hosts.aggregates import effective_settings
from nubes.store.models import Aggregate, AggregateHost, Host, Instance, new_id, utcnow
from tests.functional.helpers import (
    error_of,
    make_project,
    make_user,
    statements_of_this_thread,
)

# builders: rows the way joined agents and created instances leave them -------------------------


def make_host(
    cloud: Any, name: str, *, up: bool = True, enabled: bool = True, **columns: Any
) -> str:
    """A host as a monitored agent leaves it (``up``), or one never heard of since joining."""
    host = Host(
        id=new_id(),
        name=name,
        driver="fake",
        credential_hash="x",
        vcpus=8,
        ram_mb=16384,
        disk_gb=100,
        enabled=enabled,
        state="monitored" if up else "init",
        last_seen=utcnow() if up else None,
        **columns,
    )
    with cloud.services.db.transaction() as session:
        session.add(host)
    return host.id


def make_instance(
    cloud: Any, project: str, name: str, *, host_id: str | None = None, zone: str | None = None
) -> str:
    """An instance of ``project`` (name or id) on ``host_id``, as create leaves it."""
    with cloud.services.db.transaction() as session:
        from nubes.identity.projects import find_project

        row = Instance(
            name=name,
            project_id=find_project(session, project).id,
            user_id="u",
            flavor_id="1",
            vcpus=1,
            ram_mb=512,
            disk_gb=1,
            image_id="i",
            image_kind="disk",
            host_id=host_id,
            state="running" if host_id else "error",
            availability_zone=zone,
        )
        session.add(row)
        session.flush()
        return row.id


def set_instance_state(cloud: Any, instance_id: str, state: str) -> None:
    with cloud.services.db.transaction() as session:
        session.get(Instance, instance_id).state = state


def create(cloud: Any, admin: dict[str, str], name: str, **body: Any) -> dict[str, Any]:
    r = cloud.client.post("/v1/aggregates", json={"name": name, **body}, headers=admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def add(cloud: Any, admin: dict[str, str], aggregate: str, host: str) -> Any:
    return cloud.client.post(
        f"/v1/aggregates/{aggregate}/hosts", json={"host": host}, headers=admin
    )


def generation(cloud: Any, host_id: str) -> int:
    with cloud.services.db.read() as session:
        return int(session.scalar(select(Host.generation).where(Host.id == host_id)) or 0)


# aggregates --------------------------------------------------------------------------------------


def test_aggregate_create_list_show_set_unset_hosts_delete(cloud):
    admin = cloud.admin
    n1 = make_host(cloud, "node-1")
    make_host(cloud, "node-2")
    made = create(cloud, admin, "fast", availability_zone="az1", metadata={"ssd": "true"})
    assert (made["availability_zone"], made["metadata"], made["hosts"]) == (
        "az1",
        {"ssd": "true"},
        [],
    )
    r = cloud.client.post("/v1/aggregates", json={"name": "fast"}, headers=admin)
    assert error_of(r)["code"] == "nubes.aggregate.exists"

    before = generation(cloud, n1)
    assert add(cloud, admin, "fast", "node-2").json()["hosts"] == ["node-2"]
    assert add(cloud, admin, made["id"], n1).json()["hosts"] == ["node-1", "node-2"]
    assert generation(cloud, n1) > before  # a placement that read the old zone loses its claim
    r = add(cloud, admin, "fast", "node-1")
    assert r.status_code == 409
    assert error_of(r)["code"] == "nubes.aggregate.host_exists"
    assert add(cloud, admin, "fast", "node-9").status_code == 404

    r = cloud.client.patch(
        "/v1/aggregates/fast",
        json={"name": "quick", "metadata": {"gpu": "1", "cpu_allocation_ratio": "4"}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "quick"
    assert r.json()["metadata"] == {"ssd": "true", "gpu": "1", "cpu_allocation_ratio": "4"}
    assert r.json()["availability_zone"] == "az1"  # not named: unchanged
    r = cloud.client.patch(
        "/v1/aggregates/quick",
        json={"metadata": {"ssd": None}, "availability_zone": None},
        headers=admin,
    )
    assert r.json()["metadata"] == {"gpu": "1", "cpu_allocation_ratio": "4"}
    assert r.json()["availability_zone"] is None

    shown = cloud.client.get("/v1/aggregates/quick", headers=admin).json()
    assert shown["hosts"] == ["node-1", "node-2"]
    listed = cloud.client.get("/v1/aggregates", headers=admin).json()
    assert [a["name"] for a in listed["aggregates"]] == ["quick"]
    assert listed["aggregates"][0]["hosts"] == ["node-1", "node-2"]

    r = cloud.client.delete("/v1/aggregates/quick", headers=admin)
    assert r.status_code == 409
    err = error_of(r)
    assert err["code"] == "nubes.aggregate.in_use"
    assert "node-1" in err["message"]
    assert (
        cloud.client.delete("/v1/aggregates/quick/hosts/node-1", headers=admin).status_code == 200
    )
    r = cloud.client.delete("/v1/aggregates/quick/hosts/node-1", headers=admin)
    assert r.status_code == 404
    assert "not in aggregate" in error_of(r)["message"]
    cloud.client.delete("/v1/aggregates/quick/hosts/node-2", headers=admin)
    assert cloud.client.delete("/v1/aggregates/quick", headers=admin).status_code == 204
    r = cloud.client.get("/v1/aggregates/quick", headers=admin)
    assert error_of(r)["code"] == "nubes.aggregate.not_found"


def test_aggregate_list_pages_and_filters(cloud):
    admin = cloud.admin
    for name, zone in (("a1", "z1"), ("a2", None), ("a3", "z1"), ("a4", "z2")):
        create(cloud, admin, name, **({"availability_zone": zone} if zone else {}))
    page = cloud.client.get("/v1/aggregates?limit=2", headers=admin).json()
    assert [a["name"] for a in page["aggregates"]] == ["a1", "a2"]
    rest = cloud.client.get(
        f"/v1/aggregates?limit=2&marker={page['next_marker']}", headers=admin
    ).json()
    assert [a["name"] for a in rest["aggregates"]] == ["a3", "a4"]
    by_zone = cloud.client.get("/v1/aggregates?availability_zone=z1", headers=admin).json()
    assert [a["name"] for a in by_zone["aggregates"]] == ["a1", "a3"]
    by_name = cloud.client.get("/v1/aggregates?name=a4", headers=admin).json()
    assert [a["name"] for a in by_name["aggregates"]] == ["a4"]
    assert cloud.client.get("/v1/aggregates?marker=nope", headers=admin).status_code == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metadata": {"has space": "1"}}, "metadata"),
        ({"metadata": {"k": "v" * 256}}, "metadata"),
        ({"metadata": {"cpu_allocation_ratio": "0"}}, "cpu_allocation_ratio"),
        ({"metadata": {"ram_allocation_ratio": "-1"}}, "ram_allocation_ratio"),
        ({"metadata": {"disk_allocation_ratio": "lots"}}, "disk_allocation_ratio"),
        ({"metadata": {"cpu_allocation_ratio": "1001"}}, "cpu_allocation_ratio"),
        ({"metadata": {"cpu_allocation_ratio": "nan"}}, "cpu_allocation_ratio"),
        ({"metadata": {"max_instances_per_host": "1.5"}}, "max_instances_per_host"),
        ({"metadata": {"max_instances_per_host": "0"}}, "max_instances_per_host"),
        ({"metadata": {"availability_zone": "z"}}, "availability_zone"),
        ({"availability_zone": "no spaces"}, "availability_zone"),
        ({"availability_zone": "z" * 65}, "availability_zone"),
        ({"name": "bad name"}, "name"),
    ],
)
def test_bad_aggregate_input_is_400_naming_the_field(cloud, body, field):
    admin = cloud.admin
    r = cloud.client.post("/v1/aggregates", json={"name": "a", **body}, headers=admin)
    assert r.status_code == 400, r.text
    assert field in error_of(r)["message"]
    create(cloud, admin, "b")
    r = cloud.client.patch("/v1/aggregates/b", json=body, headers=admin)
    assert r.status_code == 400, r.text
    assert field in error_of(r)["message"]
    assert cloud.client.get("/v1/aggregates/b", headers=admin).json()["metadata"] == {}


def test_aggregates_and_host_settings_are_for_cloud_admins(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    member = make_user(cloud, admin, "u1", "p1")
    make_host(cloud, "node-1")
    create(cloud, admin, "agg")
    for method, url, body in (
        ("post", "/v1/aggregates", {"name": "x"}),
        ("get", "/v1/aggregates", None),
        ("get", "/v1/aggregates/agg", None),
        ("patch", "/v1/aggregates/agg", {"metadata": {"a": "b"}}),
        ("post", "/v1/aggregates/agg/hosts", {"host": "node-1"}),
        ("delete", "/v1/aggregates/agg/hosts/node-1", None),
        ("delete", "/v1/aggregates/agg", None),
        ("patch", "/v1/hosts/node-1", {"cpu_allocation_ratio": 2}),
    ):
        kwargs: dict[str, Any] = {"headers": member}
        if body is not None:
            kwargs["json"] = body
        r = getattr(cloud.client, method)(url, **kwargs)
        assert r.status_code == 403, (method, url, r.text)
        assert error_of(r)["code"] == "nubes.policy.forbidden"
    assert cloud.client.get("/v1/availability-zones", headers=member).status_code == 200


# one zone per host -------------------------------------------------------------------------------


def test_a_host_is_in_one_zone_at_most(cloud):
    admin = cloud.admin
    make_host(cloud, "node-1")
    create(cloud, admin, "rack-1", availability_zone="az1")
    create(cloud, admin, "rack-2", availability_zone="az2")
    create(cloud, admin, "gpus")
    create(cloud, admin, "also-az1", availability_zone="az1")
    assert add(cloud, admin, "rack-1", "node-1").status_code == 200

    r = add(cloud, admin, "rack-2", "node-1")
    assert r.status_code == 409
    err = error_of(r)
    assert err["code"] == "nubes.aggregate.zone_conflict"
    assert "'az1'" in err["message"]
    assert "'az2'" in err["message"]
    assert "node-1" in err["message"]
    assert cloud.client.get("/v1/aggregates/rack-2", headers=admin).json()["hosts"] == []

    assert add(cloud, admin, "gpus", "node-1").status_code == 200  # no zone: no conflict
    assert add(cloud, admin, "also-az1", "node-1").status_code == 200  # the same zone
    r = cloud.client.patch("/v1/aggregates/gpus", json={"availability_zone": "az2"}, headers=admin)
    assert r.status_code == 409
    err = error_of(r)
    assert err["code"] == "nubes.aggregate.zone_conflict"
    assert "'az1'" in err["message"]
    assert "'az2'" in err["message"]
    assert (
        cloud.client.get("/v1/aggregates/gpus", headers=admin).json()["availability_zone"] is None
    )
    r = cloud.client.patch("/v1/aggregates/gpus", json={"availability_zone": "az1"}, headers=admin)
    assert r.status_code == 200, r.text


def test_a_host_keeps_the_zone_its_instances_asked_for(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    host = make_host(cloud, "node-1")
    create(cloud, admin, "rack-1", availability_zone="az1")
    assert add(cloud, admin, "rack-1", "node-1").status_code == 200
    pinned = make_instance(cloud, "p1", "web", host_id=host, zone="az1")
    make_instance(cloud, "p1", "anywhere", host_id=host)  # asked for no zone: may move

    for r in (
        cloud.client.delete("/v1/aggregates/rack-1/hosts/node-1", headers=admin),
        cloud.client.patch(
            "/v1/aggregates/rack-1", json={"availability_zone": "az9"}, headers=admin
        ),
        cloud.client.patch(
            "/v1/aggregates/rack-1", json={"availability_zone": None}, headers=admin
        ),
    ):
        assert r.status_code == 409, r.text
        err = error_of(r)
        assert err["code"] == "nubes.aggregate.zone_in_use"
        assert "1 instance(s)" in err["message"]
        assert "'az1'" in err["message"]
    # renaming the aggregate or changing its metadata does not move anything
    r = cloud.client.patch("/v1/aggregates/rack-1", json={"metadata": {"a": "b"}}, headers=admin)
    assert r.status_code == 200

    set_instance_state(cloud, pinned, "deleted")
    r = cloud.client.patch(
        "/v1/aggregates/rack-1", json={"availability_zone": "az9"}, headers=admin
    )
    assert r.status_code == 200, r.text


def race(*moves: Any) -> list[str]:
    """Run the moves at the same moment, each in its own thread; "ok" or each one's code."""
    from nubes.domain.errors import Conflict

    barrier = threading.Barrier(len(moves))
    outcomes: list[str] = []

    def run(move: Any) -> None:
        barrier.wait()
        try:
            move()
            outcomes.append("ok")
        except Conflict as exc:
            outcomes.append(exc.error_code)

    threads = [threading.Thread(target=run, args=(move,)) for move in moves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(outcomes)


def test_concurrent_changes_never_put_a_host_in_two_zones(cloud):
    """Two admins at once: one adds the host to a zone, the other to another zone, or gives
    the host's aggregate a zone. The locks make them take turns: exactly one wins."""
    from nubes.domain.context import RequestContext

    admin = cloud.admin
    service, system = cloud.services.aggregates, RequestContext.system()
    create(cloud, admin, "east", availability_zone="az-east")
    create(cloud, admin, "west", availability_zone="az-west")
    for round_ in range(6):
        host, plain = f"node-{round_}", f"plain-{round_}"
        make_host(cloud, host)
        create(cloud, admin, plain)
        add(cloud, admin, plain, host)
        if round_ % 2:
            other = partial(service.add_host, system, "west", host)
        else:
            other = partial(service.update, system, plain, {"availability_zone": "z"})
        outcomes = race(partial(service.add_host, system, "east", host), other)
        assert outcomes == ["nubes.aggregate.zone_conflict", "ok"], outcomes
        zones = cloud.client.get("/v1/availability-zones", headers=admin).json()
        homes = [z["name"] for z in zones["availability_zones"] if host in z["hosts"]]
        assert len(homes) == 1, homes


# zones -------------------------------------------------------------------------------------------


def test_zones_say_whether_they_can_take_instances(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    reader = make_user(cloud, admin, "u1", "p1", role="reader")
    make_host(cloud, "up-1")
    make_host(cloud, "down-1", up=False)
    make_host(cloud, "off-1", enabled=False)
    make_host(cloud, "stale-1")
    make_host(cloud, "plain-1")
    with cloud.services.db.transaction() as session:  # last heard of long ago
        stale = session.scalar(select(Host).where(Host.name == "stale-1"))
        stale.last_seen = utcnow() - timedelta(hours=1)
    for aggregate, zone, hosts in (
        ("a-up", "az-up", ["up-1", "down-1"]),
        ("a-down", "az-down", ["down-1"]),
        ("a-off", "az-off", ["off-1", "stale-1"]),
        ("a-empty", "az-empty", []),
        ("a-nozone", None, ["plain-1"]),
    ):
        create(cloud, admin, aggregate, **({"availability_zone": zone} if zone else {}))
        for host in hosts:
            if aggregate != "a-down" or host != "down-1":
                assert add(cloud, admin, aggregate, host).status_code == 200
    # down-1 is in az-up already: a-down keeps no hosts
    expected = {
        "az-down": (False, []),
        "az-empty": (False, []),
        "az-off": (False, ["off-1", "stale-1"]),
        "az-up": (True, ["down-1", "up-1"]),
        "nova": (True, ["plain-1"]),
    }
    got = cloud.client.get("/v1/availability-zones", headers=admin).json()["availability_zones"]
    assert {z["name"]: (z["available"], z["hosts"]) for z in got} == expected

    seen = cloud.client.get("/v1/availability-zones", headers=reader).json()["availability_zones"]
    assert {z["name"]: z["available"] for z in seen} == {k: v[0] for k, v in expected.items()}
    assert all(z["hosts"] is None for z in seen)  # readers never learn host names

    page = cloud.client.get("/v1/availability-zones?limit=2", headers=reader).json()
    assert [z["name"] for z in page["availability_zones"]] == ["az-down", "az-empty"]
    rest = cloud.client.get(
        f"/v1/availability-zones?marker={page['next_marker']}", headers=reader
    ).json()
    assert [z["name"] for z in rest["availability_zones"]] == ["az-off", "az-up", "nova"]
    named = cloud.client.get("/v1/availability-zones?name=az-up", headers=reader).json()
    assert [z["name"] for z in named["availability_zones"]] == ["az-up"]
    r = cloud.client.get("/v1/availability-zones?marker=atlantis", headers=reader)
    assert r.status_code == 400
    assert "marker" in error_of(r)["message"]


def test_default_zone_follows_the_setting(cloud):
    cloud.services.settings.default_availability_zone = "main"
    make_host(cloud, "node-1")
    got = cloud.client.get("/v1/availability-zones", headers=cloud.admin).json()
    assert [(z["name"], z["hosts"]) for z in got["availability_zones"]] == [("main", ["node-1"])]


# per-host settings -------------------------------------------------------------------------------


def test_host_set_overrides_and_show_says_where_values_come_from(cloud):
    admin = cloud.admin
    host = make_host(cloud, "node-1")
    create(
        cloud, admin, "dense", metadata={"ram_allocation_ratio": "3", "max_instances_per_host": "7"}
    )
    add(cloud, admin, "dense", "node-1")

    shown = cloud.client.get("/v1/hosts/node-1", headers=admin).json()
    sched = shown["scheduling"]
    assert (sched["cpu_allocation_ratio"], sched["sources"]["cpu_allocation_ratio"]) == (
        16.0,
        "default",
    )
    assert (sched["ram_allocation_ratio"], sched["sources"]["ram_allocation_ratio"]) == (
        3.0,
        "aggregate dense",
    )
    assert (sched["max_instances"], sched["sources"]["max_instances"]) == (7, "aggregate dense")
    assert (sched["availability_zone"], sched["aggregates"]) == ("nova", ["dense"])

    before = generation(cloud, host)
    r = cloud.client.patch(
        "/v1/hosts/node-1",
        json={"cpu_allocation_ratio": 4, "ram_allocation_ratio": 1.25, "max_instances": 3},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["cpu_allocation_ratio"] == 4.0
    sched = r.json()["scheduling"]
    assert sched["cpu_allocation_ratio"] == 4.0
    assert sched["ram_allocation_ratio"] == 1.25
    assert sched["max_instances"] == 3
    assert set(sched["sources"].values()) == {"host", "default"}
    assert generation(cloud, host) == before + 1

    r = cloud.client.patch(
        "/v1/hosts/node-1",
        json={"cpu_allocation_ratio": None, "ram_allocation_ratio": None, "max_instances": None},
        headers=admin,
    )
    sched = r.json()["scheduling"]
    assert sched["sources"]["cpu_allocation_ratio"] == "default"
    assert sched["sources"]["ram_allocation_ratio"] == "aggregate dense"
    assert r.json()["max_instances"] is None

    r = cloud.client.patch(
        "/v1/hosts/node-1", json={"enabled": False, "reason": "x"}, headers=admin
    )
    assert r.json()["enabled"] is False  # enabling still works as before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cpu_allocation_ratio": 0}, "cpu_allocation_ratio"),
        ({"ram_allocation_ratio": -1.5}, "ram_allocation_ratio"),
        ({"disk_allocation_ratio": 1000.5}, "disk_allocation_ratio"),
        ({"cpu_allocation_ratio": "lots"}, "cpu_allocation_ratio"),
        ({"max_instances": 0}, "max_instances"),
        ({"max_instances": 2.5}, "max_instances"),
        ({}, "enabled"),
        ({"reason": "only"}, "max_instances"),
    ],
)
def test_bad_host_settings_are_400_naming_the_field(cloud, body, field):
    make_host(cloud, "node-1")
    r = cloud.client.patch("/v1/hosts/node-1", json=body, headers=cloud.admin)
    assert r.status_code == 400, r.text
    assert field in error_of(r)["message"]


def test_service_refuses_bad_settings_from_any_caller(cloud):
    from nubes.domain.context import RequestContext
    from nubes.domain.errors import InvalidInput

    make_host(cloud, "node-1")
    hosts = cloud.services.hosts
    system = RequestContext.system()
    for changes in (
        {"cpu_allocation_ratio": float("inf")},
        {"max_instances": True},
        {"unknown": 1},
    ):
        with pytest.raises(InvalidInput):
            hosts.update_settings(system, "node-1", changes)


# effective_settings: the scheduler's view --------------------------------------------------------


def test_effective_settings_merge_host_aggregates_and_defaults(cloud):
    admin = cloud.admin
    both = make_host(cloud, "both")
    own = make_host(cloud, "own", cpu_allocation_ratio=2.0, max_instances=50)
    bare = make_host(cloud, "bare")
    create(
        cloud,
        admin,
        "a-big",
        metadata={
            "cpu_allocation_ratio": "8",
            "ram_allocation_ratio": "2",
            "max_instances_per_host": "20",
            "ssd": "true",
            "tier": "3",
        },
    )
    create(
        cloud,
        admin,
        "b-small",
        availability_zone="az1",
        metadata={
            "cpu_allocation_ratio": "4",
            "ssd": "false",
            "tier": "10",
            "max_instances_per_host": "30",
        },
    )
    for aggregate, host in (("a-big", "both"), ("b-small", "both"), ("a-big", "own")):
        assert add(cloud, admin, aggregate, host).status_code == 200

    with cloud.services.db.read() as session:
        got = effective_settings(session, cloud.services.settings)
    assert set(got) == {both, own, bare}

    merged = got[both]
    assert merged.zone == "az1"
    assert merged.aggregates == ("a-big", "b-small")
    assert merged.cpu_allocation_ratio == 4.0  # the smaller of 8 and 4
    assert merged.sources["cpu_allocation_ratio"] == "aggregate b-small"
    assert merged.ram_allocation_ratio == 2.0
    assert merged.sources["ram_allocation_ratio"] == "aggregate a-big"
    assert merged.disk_allocation_ratio == cloud.services.settings.disk_allocation_ratio
    assert merged.sources["disk_allocation_ratio"] == "default"
    assert (merged.max_instances, merged.sources["max_instances"]) == (20, "aggregate a-big")
    assert merged.metadata["tier"] == "3"  # numerically smallest, though "10" sorts first
    assert merged.metadata["ssd"] == "false"
    assert merged.metadata_values["ssd"] == frozenset({"true", "false"})

    mine = got[own]
    assert (mine.cpu_allocation_ratio, mine.sources["cpu_allocation_ratio"]) == (2.0, "host")
    assert (mine.max_instances, mine.sources["max_instances"]) == (50, "host")
    assert mine.ram_allocation_ratio == 2.0
    assert mine.zone == "nova"

    plain = got[bare]
    assert plain.aggregates == ()
    assert plain.max_instances is None
    assert plain.cpu_allocation_ratio == cloud.services.settings.cpu_allocation_ratio
    assert dict(plain.metadata) == {}

    with cloud.services.db.read() as session:
        only = effective_settings(session, cloud.services.settings, [own])
    assert set(only) == {own}


def test_effective_settings_for_10000_hosts_costs_two_queries(cloud):
    """Two queries and a merge per distinct set of aggregates, whatever the number of hosts
    (its time is bench material, not a test's: these machines are shared)."""
    aggregates = [
        {
            "id": new_id(),
            "name": f"agg-{i}",
            "availability_zone": f"az{i}" if i < 2 else None,
            "aggregate_metadata": {"cpu_allocation_ratio": str(2 + i), "k": str(i)},
            "generation": 1,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        for i in range(6)
    ]
    hosts = [
        {
            "id": new_id(),
            "name": f"h{i:05d}",
            "driver": "fake",
            "credential_hash": "x",
            "cpu_allocation_ratio": 1.5 if i % 7 == 0 else None,
            "generation": 1,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        for i in range(10_000)
    ]
    links = [
        {"aggregate_id": aggregates[j]["id"], "host_id": h["id"]}
        for i, h in enumerate(hosts)
        for j in (i % 2, 2 + i % 4)
        if i % 10
    ]
    with cloud.services.db.transaction() as session:
        session.execute(insert(Aggregate), aggregates)
        session.execute(insert(Host), hosts)
        session.execute(insert(AggregateHost), links)

    with (
        cloud.services.db.read() as session,
        statements_of_this_thread(cloud.services.db.engine) as statements,
    ):
        got = effective_settings(session, cloud.services.settings)
    assert len(statements) == 2, statements  # whatever the number of hosts
    assert len(got) == 10_000
    first = got[hosts[1]["id"]]  # in agg-1 (az1, ratio 3) and agg-3 (ratio 5)
    assert (first.zone, first.cpu_allocation_ratio) == ("az1", 3.0)
    assert got[hosts[0]["id"]].aggregates == ()
    assert got[hosts[0]["id"]].cpu_allocation_ratio == 1.5
