"""Flavors, keypairs, users, projects, roles and quotas through the API."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.functional.helpers import PASSWORD, error_of, make_project, make_user


def _public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_default_flavors_are_the_openstack_sizes(cloud):
    flavors = cloud.client.get("/v1/flavors", headers=cloud.admin).json()["flavors"]
    sizes = [(f["name"], f["ram_mb"], f["disk_gb"], f["ephemeral_gb"], f["vcpus"]) for f in flavors]
    assert sizes == [
        ("m1.tiny", 512, 1, 0, 1),
        ("m1.small", 1024, 20, 40, 1),
        ("m1.medium", 2048, 40, 40, 2),
        ("m1.large", 8192, 40, 40, 4),
        ("m1.xlarge", 16384, 80, 40, 8),
    ]


def test_flavor_crud_extra_specs_and_access(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    r = cloud.client.post(
        "/v1/flavors",
        json={
            "name": "gpu.big",
            "vcpus": 8,
            "ram_mb": 32768,
            "disk_gb": 100,
            "swap_mb": 1024,
            "is_public": False,
            "extra_specs": {"hw:cpu_policy": "dedicated"},
            "id": "gpu-1",
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "gpu-1"
    assert (
        cloud.client.post(
            "/v1/flavors",
            json={"name": "gpu.big", "vcpus": 1, "ram_mb": 1, "disk_gb": 1},
            headers=admin,
        ).status_code
        == 409
    )
    assert cloud.client.get("/v1/flavors/gpu.big", headers=u1).status_code == 404
    r = cloud.client.post("/v1/flavors/gpu-1/access", json={"project": "p1"}, headers=admin)
    assert r.status_code == 200, r.text
    assert cloud.client.get("/v1/flavors/gpu.big", headers=u1).status_code == 200
    r = cloud.client.patch(
        "/v1/flavors/gpu-1",
        json={"description": "for ML", "extra_specs": {"hw:cpu_policy": None, "gpu": "1"}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["extra_specs"] == {"gpu": "1"}
    assert r.json()["generation"] == 2
    r = cloud.client.patch(
        "/v1/flavors/gpu-1", json={"description": None, "name": None}, headers=admin
    )
    assert r.status_code == 200, r.text  # null leaves a field as it is
    assert r.json()["description"] == "for ML"
    r = cloud.client.patch("/v1/flavors/gpu-1", json={"vcpus": 2}, headers=admin)
    assert r.status_code == 400  # sizes are fixed once made
    r = cloud.client.delete("/v1/flavors/gpu-1/access/p1", headers=admin)
    assert r.json()["projects"] == []
    assert cloud.client.get("/v1/flavors/gpu.big", headers=u1).status_code == 404
    r = cloud.client.post("/v1/flavors/m1.tiny/access", json={"project": "p1"}, headers=admin)
    assert error_of(r)["code"] == "nubes.flavor.access_public"
    assert cloud.client.delete("/v1/flavors/gpu-1", headers=admin).status_code == 204
    assert cloud.client.get("/v1/flavors/gpu-1", headers=admin).status_code == 404


def test_flavor_bad_sizes_are_400(cloud):
    r = cloud.client.post(
        "/v1/flavors",
        json={"name": "zero", "vcpus": 0, "ram_mb": -1, "disk_gb": 1},
        headers=cloud.admin,
    )
    assert r.status_code == 400
    msg = error_of(r)["message"]
    assert "vcpus" in msg
    assert "ram_mb" in msg


def test_keypair_import_generate_and_reject(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    pub = _public_key()
    r = cloud.client.post("/v1/keypairs", json={"name": "laptop", "public_key": pub}, headers=u1)
    assert r.status_code == 201, r.text
    assert r.json()["fingerprint"].startswith("SHA256:")
    assert r.json()["private_key"] is None
    r = cloud.client.post("/v1/keypairs", json={"name": "made"}, headers=u1)
    assert r.status_code == 201
    assert "OPENSSH PRIVATE KEY" in r.json()["private_key"]
    shown = cloud.client.get("/v1/keypairs/made", headers=u1).json()
    assert "private_key" not in shown
    r = cloud.client.post("/v1/keypairs", json={"name": "laptop", "public_key": pub}, headers=u1)
    assert error_of(r)["code"] == "nubes.keypair.exists"
    r = cloud.client.post(
        "/v1/keypairs", json={"name": "junk", "public_key": "ssh-rsa AAAAjunk"}, headers=u1
    )
    assert r.status_code == 400
    assert error_of(r)["code"] == "nubes.keypair.invalid_key"
    names = [k["name"] for k in cloud.client.get("/v1/keypairs", headers=u1).json()["keypairs"]]
    assert names == ["laptop", "made"]


def test_keypair_quota_per_user(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    r = cloud.client.patch("/v1/quotas/p1", json={"limits": {"key_pairs": 2}}, headers=admin)
    assert r.status_code == 200, r.text
    for i in range(2):
        assert (
            cloud.client.post("/v1/keypairs", json={"name": f"k{i}"}, headers=u1).status_code == 201
        )
    r = cloud.client.post("/v1/keypairs", json={"name": "k2"}, headers=u1)
    assert r.status_code == 403
    err = error_of(r)
    assert err["code"] == "nubes.quota.exceeded"
    assert "key_pairs" in err["message"]
    assert "2 of 2" in err["message"]
    assert cloud.client.get("/v1/quotas/p1", headers=u1).json()["in_use"]["key_pairs"] == 2
    cloud.client.delete("/v1/keypairs/k0", headers=u1)
    assert cloud.client.get("/v1/quotas/p1", headers=u1).json()["in_use"]["key_pairs"] == 1
    assert cloud.client.post("/v1/keypairs", json={"name": "k2"}, headers=u1).status_code == 201


def test_quota_show_set_defaults_and_bad_input(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    defaults = cloud.client.get("/v1/quotas/defaults", headers=admin).json()
    assert defaults["instances"] == 10
    assert set(defaults) >= {
        "instances",
        "cores",
        "ram",
        "volumes",
        "gigabytes",
        "networks",
        "ports",
        "floating_ips",
        "security_groups",
        "key_pairs",
    }
    r = cloud.client.patch(
        "/v1/quotas/p1", json={"limits": {"cores": -1, "ram": 1024}}, headers=admin
    )
    assert r.json()["limits"]["cores"] == -1
    assert r.json()["limits"]["ram"] == 1024
    assert r.json()["in_use"]["cores"] == 0
    r = cloud.client.patch("/v1/quotas/p1", json={"limits": {"unicorns": 1}}, headers=admin)
    assert r.status_code == 400
    assert error_of(r)["code"] == "nubes.quota.invalid_resource"
    r = cloud.client.patch("/v1/quotas/p1", json={"limits": {"cores": -5}}, headers=admin)
    assert r.status_code == 400


def test_user_and_project_lifecycle(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    make_user(cloud, admin, "u1", "p1")
    r = cloud.client.get("/v1/users", params={"project": "p1"}, headers=admin)
    assert [u["name"] for u in r.json()["users"]] == ["u1"]
    assert "password" not in str(r.json()) or "password_hash" not in r.text
    r = cloud.client.patch(
        "/v1/users/u1", json={"email": "u1@example.org", "name": "user1"}, headers=admin
    )
    assert r.status_code == 200
    assert r.json()["name"] == "user1"
    assert (
        cloud.client.post(
            "/v1/users", json={"name": "user1", "password": PASSWORD}, headers=admin
        ).status_code
        == 409
    )
    r = cloud.client.post("/v1/users", json={"name": "short", "password": "abc"}, headers=admin)
    assert r.status_code == 400
    assert "password" in error_of(r)["message"]
    r = cloud.client.get("/v1/role-assignments", params={"project": "p1"}, headers=admin)
    assert [a["role"] for a in r.json()["role_assignments"]] == ["member"]
    assert (
        cloud.client.put("/v1/projects/p1/users/user1/roles/wizard", headers=admin).status_code
        == 404
    )
    assert cloud.client.delete("/v1/users/user1", headers=admin).status_code == 204
    assert cloud.client.delete("/v1/projects/p1", headers=admin).status_code == 204
    assert cloud.client.get("/v1/projects/p1", headers=admin).status_code == 404


def test_last_admin_and_admin_project_are_protected(cloud):
    admin = cloud.admin
    r = cloud.client.delete("/v1/users/admin", headers=admin)
    assert r.status_code == 409
    assert error_of(r)["code"] == "nubes.user.in_use"
    assert (
        cloud.client.patch("/v1/users/admin", json={"enabled": False}, headers=admin).status_code
        == 409
    )
    assert cloud.client.delete("/v1/projects/admin", headers=admin).status_code == 409
    assert (
        cloud.client.delete("/v1/projects/admin/users/admin/roles/admin", headers=admin).status_code
        == 409
    )
    # the refused changes changed nothing
    assert cloud.client.get("/v1/flavors", headers=admin).status_code == 200


def test_project_with_keypairs_cannot_be_deleted(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    cloud.client.post("/v1/keypairs", json={"name": "k"}, headers=u1)
    r = cloud.client.delete("/v1/projects/p1", headers=admin)
    assert r.status_code == 409
    assert "keypairs" in error_of(r)["message"]


def test_every_change_writes_an_event(cloud):
    from nubes.store import events

    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    cloud.client.post("/v1/keypairs", json={"name": "k"}, headers=u1)
    cloud.client.delete("/v1/keypairs/k", headers=u1)
    with cloud.services.db.read() as s:
        kinds = [e.kind for e in events.since(s, 0, 1000)]
    for kind in (
        "cloud.initialised",
        "project.created",
        "user.created",
        "keypair.created",
        "keypair.deleted",
    ):
        assert kind in kinds
    # a refused change writes none
    before = len(kinds)
    cloud.client.post("/v1/projects", json={"name": "p1"}, headers=admin)
    with cloud.services.db.read() as s:
        assert len(events.since(s, 0, 1000)) == before
