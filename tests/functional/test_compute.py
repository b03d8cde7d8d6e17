"""Hosts, instances and the agent, end to end in one process: the controller app, and a real
agent (reconciler, image cache, fake driver) talking to it through the ASGI test client. Each
agent pass is run by the test (``sync``), so the steps are deterministic."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from nubes.agent.run import Agent, AgentError
from nubes.store.models import Host, Instance, utcnow
from tests.functional.helpers import (
    error_of,
    make_project,
    make_user,
    postgresql_row_locks,
    waiting_behind,
)
from tests.functional.test_networks_hosts import add_host


def join_agent(cloud, tmp_path, name="a1", **extra) -> Agent:
    token = cloud.client.post("/v1/host-tokens", json={}, headers=cloud.admin).json()["token"]
    http = TestClient(cloud.client.app)
    agent = Agent.start(
        tmp_path / name, url="http://testserver", token=token, driver="fake", http=http, **extra
    )
    agent.client.heartbeat({})
    return agent


def sync(agent: Agent) -> None:
    desired = agent.client.desired(-1, 0)
    agent.reconciler.reconcile_all(desired["instances"], wait=True)


@pytest.fixture
def image(cloud):
    admin = cloud.admin
    r = cloud.client.post(
        "/v1/images", json={"name": "tiny", "visibility": "public"}, headers=admin
    )
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    for kind in ("disk", "rootfs"):
        r = cloud.client.put(
            f"/v1/images/{image_id}/file",
            params={"kind": kind},
            content=b"not really an image " * 100,
            headers=admin,
        )
        assert r.status_code == 200, r.text
    return image_id


@pytest.fixture
def agent(cloud, tmp_path):
    a = join_agent(cloud, tmp_path)
    yield a
    a.reconciler.close()


def server(cloud, headers, name="vm1", **body):
    r = cloud.client.post(
        "/v1/servers",
        json={"name": name, "image": "tiny", "flavor": "m1.tiny", **body},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    return r.json()["servers"][0]


def show(cloud, headers, ref):
    return cloud.client.get(f"/v1/servers/{ref}", headers=headers).json()


def test_join_names_hosts_and_refuses_bad_tokens(cloud, tmp_path, agent):
    second = join_agent(cloud, tmp_path, name="a2")
    hosts = cloud.client.get("/v1/hosts", headers=cloud.admin).json()["hosts"]
    assert [h["name"] for h in hosts] == ["node-1", "node-2"]
    assert all(h["state"] == "monitored" for h in hosts)
    assert hosts[0]["capabilities"]["image_kinds"] == ["disk", "rootfs"]
    second.reconciler.close()
    with pytest.raises(Exception, match="join refused"):
        Agent.start(
            tmp_path / "a3",
            url="http://testserver",
            token="join.nope.nope",
            driver="fake",
            http=TestClient(cloud.client.app),
        )
    with pytest.raises(AgentError, match="not joined yet"):
        Agent.start(tmp_path / "a4", driver="fake")


def test_restarted_agent_keeps_its_identity(cloud, tmp_path, agent):
    again = Agent.start(tmp_path / "a1", driver="fake", http=TestClient(cloud.client.app))
    assert again.identity.host_id == agent.identity.host_id
    assert again.identity.name == "node-1"
    again.reconciler.close()
    assert len(cloud.client.get("/v1/hosts", headers=cloud.admin).json()["hosts"]) == 1


def test_lifecycle_through_the_agent(cloud, agent, image):
    admin = cloud.admin
    s = server(cloud, admin)
    assert s["state"] == "scheduled"
    assert s["task"] == "create"
    sync(agent)
    s = show(cloud, admin, "vm1")
    assert (s["state"], s["task"], s["observed_power"]) == ("running", None, "running")
    assert s["launched_at"] is not None
    # one action at a time
    r = cloud.client.post(f"/v1/servers/{s['id']}/action", json={"action": "stop"}, headers=admin)
    assert r.status_code == 202
    assert r.json()["state"] == "stopping"
    r = cloud.client.post(f"/v1/servers/{s['id']}/action", json={"action": "reboot"}, headers=admin)
    assert r.status_code == 409
    assert error_of(r)["code"] == "nubes.instance.busy"
    sync(agent)
    assert show(cloud, admin, "vm1")["state"] == "stopped"
    r = cloud.client.post(f"/v1/servers/{s['id']}/action", json={"action": "stop"}, headers=admin)
    assert error_of(r)["code"] == "nubes.instance.invalid_state"
    cloud.client.post(f"/v1/servers/{s['id']}/action", json={"action": "start"}, headers=admin)
    sync(agent)
    assert show(cloud, admin, "vm1")["state"] == "running"
    cloud.client.post(f"/v1/servers/{s['id']}/action", json={"action": "reboot"}, headers=admin)
    assert show(cloud, admin, "vm1")["state"] == "rebooting"
    sync(agent)
    s = show(cloud, admin, "vm1")
    assert (s["state"], s["task"]) == ("running", None)
    # delete gives everything back
    r = cloud.client.delete(f"/v1/servers/{s['id']}", headers=admin)
    assert r.json()["state"] == "deleting"
    sync(agent)
    assert cloud.client.get(f"/v1/servers/{s['id']}", headers=admin).status_code == 404
    assert agent.driver.list_instances() == []
    usage = cloud.client.get("/v1/quotas/admin", headers=admin).json()["in_use"]
    assert (usage["instances"], usage["cores"], usage["ram"]) == (0, 0, 0)
    host = cloud.client.get("/v1/hosts/node-1", headers=admin).json()
    assert (host["allocated_vcpus"], host["allocated_ram_mb"]) == (0, 0)


def test_orphans_are_removed_and_crashes_restarted(cloud, agent, image):
    admin = cloud.admin
    s = server(cloud, admin)
    sync(agent)
    from nubes.agent.hypervisors.base import ImageKind, InstanceSpec

    spec = InstanceSpec(
        id="orphan-1",
        name="o",
        hostname="o",
        vcpus=1,
        ram_mb=64,
        disk_gb=1,
        image_id="x",
        image_path=agent.state_dir,
        image_kind=ImageKind.disk,
    )
    agent.driver.create(spec)
    assert "orphan-1" in agent.driver.list_instances()
    sync(agent)
    assert agent.driver.list_instances() == [s["id"]]


def test_unplaceable_instance_goes_to_error_with_reasons(cloud, agent, image):
    admin = cloud.admin
    cloud.client.patch("/v1/quotas/admin", json={"limits": {"ram": -1}}, headers=admin)
    cloud.client.post(
        "/v1/flavors",
        json={"name": "huge", "vcpus": 1, "ram_mb": 10**6, "disk_gb": 1},
        headers=admin,
    )
    s = server(cloud, admin, flavor="huge")
    assert s["state"] == "error"
    assert "0 of 1 hosts fit: 1 not enough RAM (need 1000000 MB" in s["reason"]
    cloud.client.patch("/v1/hosts/node-1", json={"enabled": False}, headers=admin)
    s = server(cloud, admin, name="vm2")
    assert s["reason"] == "0 of 1 hosts fit: 1 disabled; disabled: node-1"  # admins: names
    make_project(cloud, admin, "p1")
    member = make_user(cloud, admin, "u1", "p1", role="member")
    s = server(cloud, member, name="vm3")
    assert s["reason"] == "0 of 1 hosts fit: 1 disabled"  # users: never host names


def test_no_hosts_at_all_says_how_to_add_one(cloud, image):
    s = server(cloud, cloud.admin)
    assert s["state"] == "error"
    assert "nubes host token create" in s["reason"]
    # an instance that never reached a host is deleted at once, and its quota released
    r = cloud.client.delete(f"/v1/servers/{s['id']}", headers=cloud.admin)
    assert r.status_code == 202
    assert (
        cloud.client.get("/v1/quotas/admin", headers=cloud.admin).json()["in_use"]["instances"] == 0
    )


def test_overdue_task_goes_to_error_with_a_reason(cloud, agent, image):
    s = server(cloud, cloud.admin)
    with cloud.services.db.transaction() as session:
        session.execute(update(Instance).values(task_deadline=utcnow() - timedelta(seconds=1)))
    assert cloud.services.instances.expire_tasks() == [s["id"]]
    s = show(cloud, cloud.admin, s["id"])
    assert s["state"] == "error"
    assert "create did not finish before its deadline" in s["reason"]
    assert s["task"] is None


def test_missed_heartbeats_put_the_host_in_error(cloud, agent):
    with cloud.services.db.transaction() as session:
        session.execute(update(Host).values(last_seen=utcnow() - timedelta(minutes=5)))
    assert cloud.services.hosts.check_heartbeats() == ["node-1"]
    host = cloud.client.get("/v1/hosts/node-1", headers=cloud.admin).json()
    assert host["state"] == "error"
    assert "no heartbeat since" in host["error"]
    services = cloud.client.get("/v1/services", headers=cloud.admin).json()["services"]
    assert [s["state"] for s in services if s["host"] == "node-1"] == ["down"]
    agent.client.heartbeat({})
    assert cloud.client.get("/v1/hosts/node-1", headers=cloud.admin).json()["state"] == "monitored"


def test_concurrent_creates_never_overbook_a_host(cloud, agent, image):
    """The host has room for exactly 8 m1.tiny by RAM (its capacity is set below); 16 creates
    race; exactly 8 are placed."""
    with cloud.services.db.transaction() as session:
        session.execute(update(Host).values(vcpus=100, ram_mb=int(8 * 512 / 1.5) + 1))
    cloud.client.patch(
        "/v1/quotas/admin",
        json={"limits": {"instances": -1, "cores": -1, "ram": -1}},
        headers=cloud.admin,
    )
    token = cloud.admin
    results: list[dict] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        client = TestClient(cloud.client.app)
        barrier.wait()
        for j in range(2):
            r = client.post(
                "/v1/servers",
                json={"name": f"r{i}-{j}", "image": "tiny", "flavor": "m1.tiny"},
                headers=token,
            )
            with lock:
                results.append(r.json()["servers"][0])

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    placed = [s for s in results if s["state"] == "scheduled"]
    assert len(placed) == 8
    assert all("not enough RAM" in s["reason"] for s in results if s["state"] == "error")
    with cloud.services.db.read() as session:
        host = session.scalars(select(Host)).one()
        assert host.allocated_ram_mb == 8 * 512


def test_members_see_only_their_project_and_no_host_ids(cloud, agent, image):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    make_project(cloud, admin, "p2")
    u1 = make_user(cloud, admin, "u1", "p1")
    u2 = make_user(cloud, admin, "u2", "p2")
    s = server(cloud, u1, name="mine")
    assert s["host_id"] is None
    assert cloud.client.get(f"/v1/servers/{s['id']}", headers=u2).status_code == 404
    assert cloud.client.get("/v1/servers", headers=u2).json()["servers"] == []
    assert cloud.client.delete(f"/v1/servers/{s['id']}", headers=u2).status_code == 404
    r1 = make_user(cloud, admin, "r1", "p1", role="reader")
    assert cloud.client.get(f"/v1/servers/{s['id']}", headers=r1).status_code == 200
    r = cloud.client.post(f"/v1/servers/{s['id']}/action", json={"action": "stop"}, headers=r1)
    assert r.status_code == 403
    assert show(cloud, admin, s["id"])["host_id"] is not None


def test_an_idle_long_poll_answers_unchanged_without_the_instances(cloud, agent, image):
    """A poll that waited and saw nothing new says so, and leaves the agent what it had; one
    that saw a change, or asks with ``seen=-1``, carries the whole desired state."""
    server(cloud, cloud.admin)
    full = agent.client.desired(-1, 0)
    assert full["unchanged"] is False
    assert len(full["instances"]) == 1
    idle = agent.client.desired(full["version"], 0.05)
    assert idle == {
        "version": full["version"],
        "instances": [],
        "networks": None,
        "unchanged": True,
    }
    server(cloud, cloud.admin, name="vm2")
    woken = agent.client.desired(full["version"], 5)
    assert woken["unchanged"] is False
    assert len(woken["instances"]) == 2
    assert woken["version"] > full["version"]


def test_a_deleted_host_is_refused_at_once_despite_the_credential_cache(cloud, tmp_path):
    second = join_agent(cloud, tmp_path, name="gone")
    second.client.heartbeat({})  # verified and cached
    second.reconciler.close()
    r = cloud.client.delete("/v1/hosts/node-1", headers=cloud.admin)
    assert r.status_code == 204, r.text
    with pytest.raises(Exception, match="host credential refused"):
        second.client.heartbeat({})


def test_due_heartbeats_are_queued_and_written_together(cloud, tmp_path, monkeypatch):
    """A monitored host's routine beat touches no database; once due it is queued, and one
    flush writes every queued host in one transaction."""
    from nubes.hosts import service as hosts_service

    agents = [join_agent(cloud, tmp_path, name=f"q{i}") for i in range(3)]
    for a in agents:
        a.client.heartbeat({"LOAD1": 1.0})  # reshaped (new metric names): written at once
    hosts = cloud.services.hosts
    with cloud.services.db.read() as session:
        before = {h.name: h.last_seen for h in session.scalars(select(Host))}
    monkeypatch.setattr(hosts_service, "WRITE_EVERY", 0.0)
    for a in agents:
        a.client.heartbeat({"LOAD1": 2.0})
    with cloud.services.db.read() as session:
        rows = {h.name: h for h in session.scalars(select(Host))}
    assert {n: r.last_seen for n, r in rows.items()} == before  # queued, not yet written
    assert all(r.metrics == {"LOAD1": 1.0} for r in rows.values())
    assert hosts.flush_heartbeats() == 3
    assert hosts.flush_heartbeats() == 0
    with cloud.services.db.read() as session:
        rows = {h.name: h for h in session.scalars(select(Host))}
    assert all(r.metrics == {"LOAD1": 2.0} for r in rows.values())
    assert all(rows[n].last_seen > before[n] for n in rows)
    for a in agents:
        a.reconciler.close()


def test_a_host_another_worker_put_in_error_comes_back_with_its_next_beat(
    cloud, tmp_path, monkeypatch
):
    """Several workers: one may mark a host lost while another still takes its beats in
    memory. The flush finds the row no longer monitored and drops the cached copy, so the next
    beat is written and the host is monitored again (not stuck in error while it beats)."""
    from nubes.hosts import service as hosts_service

    a = join_agent(cloud, tmp_path, name="late")
    a.client.heartbeat({"LOAD1": 1.0})
    monkeypatch.setattr(hosts_service, "WRITE_EVERY", 0.0)
    a.client.heartbeat({"LOAD1": 2.0})  # queued in memory
    with cloud.services.db.transaction() as session:  # what the other worker's monitor did
        session.execute(update(Host).values(state="error"))
    assert cloud.services.hosts.flush_heartbeats() == 1
    a.client.heartbeat({"LOAD1": 3.0})
    with cloud.services.db.read() as session:
        row = session.scalars(select(Host)).one()
        assert (row.state, row.metrics) == ("monitored", {"LOAD1": 3.0})
    a.reconciler.close()


def test_an_instances_port_is_active_while_it_runs(cloud, agent, image):
    s = server(cloud, cloud.admin)

    def ports() -> list[str]:
        listed = cloud.client.get("/v1/ports", headers=cloud.admin).json()["ports"]
        return [p["status"] for p in listed if p["device_id"] == s["id"]]

    assert ports() == ["DOWN"]  # made, not yet plugged
    sync(agent)
    assert show(cloud, cloud.admin, s["id"])["state"] == "running"
    assert ports() == ["ACTIVE"]
    r = cloud.client.post(
        f"/v1/servers/{s['id']}/action", json={"action": "stop"}, headers=cloud.admin
    )
    assert r.status_code == 202, r.text
    sync(agent)
    assert show(cloud, cloud.admin, s["id"])["state"] == "stopped"
    assert ports() == ["DOWN"]


@postgresql_row_locks
def test_a_heartbeat_flush_locks_its_hosts_in_id_order(cloud):
    """The flush wrote its hosts in the order their beats came, while the host monitor (the
    ORM, by primary key) and claims take hosts in id order: two workers' flush and monitor
    deadlocked on PostgreSQL under the storm bench. It now waits for the first host in id
    order holding none of the others."""
    first, second = sorted(add_host(cloud, f"h{i}", f"192.0.2.{i}") for i in (1, 2))
    hosts, now = cloud.services.hosts, utcnow()

    def flush() -> None:
        hosts._pending = {second: (now, {}, {}), first: (now, {}, {})}  # beats came so
        hosts.flush_heartbeats()

    hold = "UPDATE hosts SET name = name WHERE id = :id"
    with waiting_behind(cloud.services.db.engine, hold, {"id": first}, flush) as probe:
        probe.execute(text("SELECT 1 FROM hosts WHERE id = :id FOR UPDATE NOWAIT"), {"id": second})
    with cloud.services.db.read() as session:
        seen = {h.id: h.last_seen for h in session.scalars(select(Host))}
    assert seen == {first: now, second: now}
