"""Kill -9 of the agent or of the controller in the middle of boots: everything converges, or
goes to error with a reason at its deadline; nothing is duplicated or left behind."""

from __future__ import annotations

import pytest

from nubes.agent.hypervisors.fake import FakeHypervisor
from tests.integration.cloudproc import CloudProcesses

pytestmark = pytest.mark.integration


@pytest.fixture
def procs(tmp_path):
    cloud = CloudProcesses(tmp_path, boot_timeout=15)
    try:
        cloud.start_controller()
        image = cloud.call("POST", "/v1/images", json={"name": "tiny", "visibility": "public"})
        cloud.call(
            "PUT", f"/v1/images/{image['id']}/file", params={"kind": "disk"}, content=b"x" * 1000
        )
        yield cloud
    finally:
        cloud.close()


def join(procs: CloudProcesses, name: str, **options) -> None:
    token = procs.call("POST", "/v1/host-tokens", json={})["token"]
    procs.start_agent(name, token=token, options=options)
    procs.wait(
        lambda: any(h["state"] == "monitored" for h in procs.call("GET", "/v1/hosts")["hosts"]),
        30,
        "the host to be up",
    )


def state_of(procs: CloudProcesses, server_id: str) -> str:
    r = procs.http.get(f"/v1/servers/{server_id}", headers=procs.admin)
    return "deleted" if r.status_code == 404 else r.json()["state"]


def create(procs: CloudProcesses, name: str) -> str:
    # crashes of compute, not networking: no NIC (networking has its own tests)
    body = {"name": name, "image": "tiny", "flavor": "m1.tiny", "networks": "none"}
    return str(procs.call("POST", "/v1/servers", json=body)["servers"][0]["id"])


def test_agent_killed_mid_boot_converges_without_duplicates(procs, tmp_path):
    join(procs, "agent", delays={"start": 2.0})
    server = create(procs, "vm")
    procs.wait(lambda: state_of(procs, server) == "booting", 20, "booting")
    procs.kill("agent")  # in the middle of the 2 s start
    procs.start_agent("agent", options={"delays": {"start": 0.2}})  # same identity, no token
    procs.wait(lambda: state_of(procs, server) == "running", 30, "running after restart")
    driver = FakeHypervisor(tmp_path / "agent" / "driver" / "fake")
    assert driver.list_instances() == [server]
    assert len(procs.call("GET", "/v1/hosts")["hosts"]) == 1
    procs.call("DELETE", f"/v1/servers/{server}")
    procs.wait(lambda: state_of(procs, server) == "deleted", 30, "deleted")
    assert FakeHypervisor(tmp_path / "agent" / "driver" / "fake").list_instances() == []


def test_controller_killed_mid_boot_converges(procs):
    join(procs, "agent", delays={"create": 1.0, "start": 1.0})
    servers = [create(procs, f"vm{i}") for i in range(3)]
    procs.wait(
        lambda: any(state_of(procs, s) in ("building", "booting") for s in servers),
        20,
        "a boot in progress",
    )
    procs.kill("controller")
    procs.start_controller()
    procs.wait(
        lambda: all(state_of(procs, s) == "running" for s in servers),
        40,
        "every instance running after the controller restart",
    )


def test_nothing_stays_transitional_when_the_host_is_gone(procs):
    join(procs, "agent", delays={"start": 60.0})
    server = create(procs, "stuck")
    procs.wait(lambda: state_of(procs, server) == "booting", 20, "booting")
    procs.kill("agent")
    procs.kill("controller")
    procs.start_controller()
    procs.wait(lambda: state_of(procs, server) == "error", 40, "error at the deadline")
    r = procs.call("GET", f"/v1/servers/{server}")
    assert "did not finish before its deadline" in r["reason"]
    # and it can still be deleted although its host is gone
    procs.call("DELETE", f"/v1/servers/{server}")
