"""The controller's side of the metadata service, ``GET /v1/agent/metadata/{port}/{path}``:
what a host's metadata proxy is told about the instance behind a port, and that a host can
only ever learn about ports bound to itself, of live instances."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from nubes.network import NicRequest, allocate_instance_ports, bind_instance_ports
from nubes.store.models import Host, Instance, IpAllocation, Port
from tests.functional.helpers import error_of, make_project, make_user
from tests.functional.test_networks import network, subnet
from tests.functional.test_scheduling import join

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetadataTestKey user@example"


@dataclass
class World:
    cloud: Any
    credential: str  # host "node-a"
    other_credential: str  # host "node-b"
    instance_id: str
    port_id: str
    address: str

    def get(self, path: str, credential: str | None = None, port: str | None = None) -> Any:
        return self.cloud.client.get(
            f"/v1/agent/metadata/{port or self.port_id}/{path}",
            headers={"Authorization": f"Bearer {credential or self.credential}"},
        )


def host_id(cloud: Any, name: str) -> str:
    with cloud.services.db.read() as session:
        return str(session.scalars(select(Host.id).where(Host.name == name)).one())


def boot(cloud: Any, member: dict[str, str], host: str, name: str, **row: Any) -> tuple[str, str]:
    """An instance row on ``host`` with one NIC on ``net``, as instance create leaves it."""
    ctx = cloud.services.auth.validate(member["X-Auth-Token"])
    instance_id = str(uuid.uuid4())
    with cloud.services.db.transaction() as session:
        session.add(
            Instance(
                id=instance_id,
                name=name,
                project_id=ctx.project_id,
                user_id=ctx.user_id,
                flavor_id="m1.small",
                vcpus=1,
                ram_mb=512,
                disk_gb=1,
                image_id=str(uuid.uuid4()),
                image_kind="disk",
                host_id=host,
                state="running",
                **row,
            )
        )
        session.flush()
        allocate_instance_ports(session, ctx, instance_id, name, [NicRequest(network="net")])
        bind_instance_ports(session, instance_id, host)
        port = session.scalars(select(Port).where(Port.device_id == instance_id)).one()
        return instance_id, port.id


@pytest.fixture
def world(cloud: Any) -> World:
    credential = join(cloud, "node-a")
    other = join(cloud, "node-b")
    make_project(cloud, cloud.admin, "p1")
    member = make_user(cloud, cloud.admin, "u1", "p1")
    network(cloud, member, "net")
    subnet(cloud, member, "net-subnet", "net", "10.9.0.0/24")
    instance_id, port_id = boot(
        cloud,
        member,
        host_id(cloud, "node-a"),
        "web 1",
        user_data="#cloud-config\nruncmd: [touch /tmp/hello]\n",
        public_key=KEY,
        keypair_name="mykey",
    )
    with cloud.services.db.read() as session:
        address = session.scalars(
            select(IpAllocation.ip_address).where(IpAllocation.port_id == port_id)
        ).one()
    return World(cloud, credential, other, instance_id, port_id, address)


def test_ec2_leaves_are_the_instances_own(world: World) -> None:
    assert world.get("latest/meta-data/instance-id").text == world.instance_id
    assert world.get("2009-04-04/meta-data/instance-id").text == world.instance_id
    assert world.get("latest/meta-data/local-ipv4").text == world.address
    assert world.get("latest/meta-data/hostname").text == "web-1"
    assert world.get("latest/meta-data/placement/availability-zone").text == "nova"
    r = world.get("latest/meta-data/ami-launch-index")
    assert (r.status_code, r.text, r.headers["content-type"]) == (
        200,
        "0",
        "text/plain; charset=utf-8",
    )
    listing = world.get("latest/meta-data/").text.splitlines()
    assert {"instance-id", "local-ipv4", "placement/", "public-keys/"} <= set(listing)


def test_keys_and_user_data(world: World) -> None:
    assert world.get("latest/meta-data/public-keys/").text == "0=mykey"
    assert world.get("latest/meta-data/public-keys/0/openssh-key").text == KEY
    assert world.get("latest/user-data").text.startswith("#cloud-config")
    assert world.get("openstack/latest/user_data").text.startswith("#cloud-config")


def test_openstack_documents_are_json_and_match_the_instance(world: World) -> None:
    r = world.get("openstack/latest/meta_data.json")
    assert r.headers["content-type"] == "application/json"
    meta = r.json()
    assert (meta["uuid"], meta["hostname"], meta["public_keys"]) == (
        world.instance_id,
        "web-1",
        {"mykey": KEY},
    )
    network_data = world.get("openstack/latest/network_data.json").json()
    assert [link["vif_id"] for link in network_data["links"]] == [world.port_id]
    assert world.get("openstack/latest/vendor_data.json").json() == {}
    assert world.get("openstack").text.splitlines() == ["2018-08-27", "latest"]
    assert "latest" in world.get("").text.splitlines()


def test_unknown_paths_are_404_with_a_code(world: World) -> None:
    for path in ("latest/meta-data/nothing", "openstack/1999-01-01/meta_data.json", "etc/passwd"):
        r = world.get(path)
        assert r.status_code == 404, path
        assert error_of(r)["code"] == "nubes.metadata.not_found"


def test_another_hosts_credential_learns_nothing(world: World) -> None:
    r = world.get("latest/meta-data/instance-id", credential=world.other_credential)
    assert r.status_code == 404
    assert world.instance_id not in r.text


def test_a_port_bound_to_another_host_is_404(world: World) -> None:
    other = host_id(world.cloud, "node-b")
    with world.cloud.services.db.transaction() as session:
        session.get(Port, world.port_id).host_id = other  # type: ignore[union-attr]
    assert world.get("latest/meta-data/instance-id").status_code == 404
    r = world.get("latest/meta-data/instance-id", credential=world.other_credential)
    assert r.status_code == 404  # bound there, but the instance is not on that host


def test_a_deleted_instance_and_an_unknown_port_are_404(world: World) -> None:
    assert world.get("latest/meta-data/instance-id", port=str(uuid.uuid4())).status_code == 404
    with world.cloud.services.db.transaction() as session:
        session.get(Instance, world.instance_id).state = "deleted"  # type: ignore[union-attr]
    assert world.get("latest/meta-data/instance-id").status_code == 404


def test_no_credential_is_401(world: World) -> None:
    r = world.cloud.client.get(f"/v1/agent/metadata/{world.port_id}/latest/meta-data/")
    assert r.status_code == 401
    assert json.loads(r.text)["error"]["code"].startswith("nubes.")
