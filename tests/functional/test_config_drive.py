"""The config drive through the agent face: an instance that asks for one (the flag is set in
the store here; the API option comes separately) carries its files in the desired state, and
the agent hands them to its driver (the fake keeps them as text)."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import update

from nubes.store.models import Instance
from tests.functional.test_compute import join_agent, server, sync


@pytest.fixture
def image(cloud):
    r = cloud.client.post("/v1/images", json={"name": "tiny", "visibility": "public"},
                          headers=cloud.admin)  # fmt: skip
    assert r.status_code == 201, r.text
    r = cloud.client.put(
        f"/v1/images/{r.json()['id']}/file",
        params={"kind": "disk"},
        content=b"not really an image " * 100,
        headers=cloud.admin,
    )
    assert r.status_code == 200, r.text


@pytest.fixture
def agent(cloud, tmp_path):
    a = join_agent(cloud, tmp_path)
    yield a
    a.reconciler.close()


def desired_of(agent, instance_id):
    instances = agent.client.desired(-1, 0)["instances"]
    return next(i for i in instances if i["id"] == instance_id)


def test_the_desired_state_carries_the_config_drive_only_when_asked(cloud, agent, image):
    s = server(cloud, cloud.admin, name="Web_Server.1", user_data="#cloud-config\n{}\n")
    item = desired_of(agent, s["id"])
    assert item["config_drive"] is None
    assert item["hostname"] == "web-server-1"  # the sanitised name the guest gets too

    with cloud.services.db.transaction() as session:
        session.execute(update(Instance).where(Instance.id == s["id"]).values(config_drive=True))
    files = {
        path: base64.b64decode(text)
        for path, text in desired_of(agent, s["id"])["config_drive"].items()
    }
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert (meta["uuid"], meta["name"], meta["hostname"]) == (
        s["id"],
        "Web_Server.1",
        "web-server-1",
    )
    assert files["openstack/latest/user_data"] == b"#cloud-config\n{}\n"
    # the instance got a NIC on the admin project's default network: the drive describes it
    [nic] = desired_of(agent, s["id"])["nics"]
    [link] = json.loads(files["openstack/latest/network_data.json"])["links"]
    assert link["ethernet_mac_address"] == nic["mac"]

    sync(agent)  # the agent builds the instance with it
    kept = json.loads((agent.driver.state_dir / "fake-instances" / f"{s['id']}.json").read_text())
    assert json.loads(kept["spec"]["config_drive"]["openstack/latest/meta_data.json"]) == meta
