"""The issue's tenancy scenario through the API: projects p1 and p2, a member in each,
private flavors and keypairs invisible across projects (404, never 403, never listed), and a
reader that can list but not create (403)."""

from __future__ import annotations

import pytest

from tests.functional.helpers import error_of, make_project, make_user


@pytest.fixture
def tenants(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    make_project(cloud, admin, "p2")
    u1 = make_user(cloud, admin, "u1", "p1")
    u2 = make_user(cloud, admin, "u2", "p2")
    r1 = make_user(cloud, admin, "r1", "p1", role="reader")
    r = cloud.client.post(
        "/v1/flavors",
        json={
            "name": "p2.secret",
            "vcpus": 1,
            "ram_mb": 256,
            "disk_gb": 1,
            "is_public": False,
            "projects": ["p2"],
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    r = cloud.client.post("/v1/keypairs", json={"name": "k2"}, headers=u2)
    assert r.status_code == 201, r.text
    return {"admin": admin, "u1": u1, "u2": u2, "r1": r1, "flavor_id": r.json()["id"]}


def test_keypair_of_another_project_is_not_found(cloud, tenants):
    u1 = tenants["u1"]
    for method in ("get", "delete"):
        r = cloud.client.request(method, "/v1/keypairs/k2", headers=u1)
        assert r.status_code == 404, r.text
        assert error_of(r)["code"] == "nubes.keypair.not_found"
    assert cloud.client.get("/v1/keypairs", headers=u1).json()["keypairs"] == []
    # u2 still has it: the failed delete touched nothing.
    assert cloud.client.get("/v1/keypairs/k2", headers=tenants["u2"]).status_code == 200


def test_keypair_of_another_user_through_user_parameter_is_not_found(cloud, tenants):
    r = cloud.client.get("/v1/keypairs", params={"user": "u2"}, headers=tenants["u1"])
    assert r.status_code == 404
    r = cloud.client.get("/v1/keypairs", params={"user": "u2"}, headers=tenants["admin"])
    assert [k["name"] for k in r.json()["keypairs"]] == ["k2"]


def test_private_flavor_is_invisible_to_other_projects(cloud, tenants):
    u1, u2 = tenants["u1"], tenants["u2"]
    names = [f["name"] for f in cloud.client.get("/v1/flavors", headers=u1).json()["flavors"]]
    assert "p2.secret" not in names
    assert "m1.tiny" in names
    for ref in ("p2.secret", tenants["flavor_id"]):
        r = cloud.client.get(f"/v1/flavors/{ref}", headers=u1)
        assert r.status_code == 404
        assert error_of(r)["code"] == "nubes.flavor.not_found"
    # touching it as a non-admin: still 404 (not 403), so its existence does not leak
    r = cloud.client.delete("/v1/flavors/p2.secret", headers=u1)
    assert r.status_code == 404
    names = [f["name"] for f in cloud.client.get("/v1/flavors", headers=u2).json()["flavors"]]
    assert "p2.secret" in names
    assert cloud.client.get("/v1/flavors/p2.secret", headers=u2).status_code == 200


def test_other_projects_are_not_found_and_not_listed(cloud, tenants):
    u1 = tenants["u1"]
    assert [p["name"] for p in cloud.client.get("/v1/projects", headers=u1).json()["projects"]] == [
        "p1"
    ]
    assert cloud.client.get("/v1/projects/p2", headers=u1).status_code == 404
    assert cloud.client.get("/v1/quotas/p2", headers=u1).status_code == 404
    assert cloud.client.get("/v1/users/u2", headers=u1).status_code == 404
    assert (
        cloud.client.get("/v1/role-assignments", params={"project": "p2"}, headers=u1).status_code
        == 404
    )


def test_reader_can_list_but_not_create(cloud, tenants):
    r1 = tenants["r1"]
    assert cloud.client.get("/v1/keypairs", headers=r1).status_code == 200
    assert cloud.client.get("/v1/flavors", headers=r1).status_code == 200
    assert cloud.client.get("/v1/quotas/p1", headers=r1).status_code == 200
    r = cloud.client.post("/v1/keypairs", json={"name": "nope"}, headers=r1)
    assert r.status_code == 403, r.text
    err = error_of(r)
    assert err["code"] == "nubes.policy.forbidden"
    assert "reader" in err["message"]


def test_member_cannot_do_admin_things(cloud, tenants):
    u1 = tenants["u1"]
    checks = [
        ("post", "/v1/projects", {"name": "p3"}),
        ("post", "/v1/users", {"name": "x1", "password": "long-enough"}),
        ("post", "/v1/flavors", {"name": "f", "vcpus": 1, "ram_mb": 1, "disk_gb": 1}),
        ("patch", "/v1/quotas/p1", {"limits": {"key_pairs": 1000}}),
        ("post", "/v1/auth/keys/rotate", None),
        ("get", "/v1/users", None),
        ("get", "/v1/status", None),
    ]
    for method, path, body in checks:
        r = cloud.client.request(method, path, json=body, headers=u1)
        assert r.status_code == 403, (method, path, r.text)


def test_admin_sees_everything(cloud, tenants):
    admin = tenants["admin"]
    names = {p["name"] for p in cloud.client.get("/v1/projects", headers=admin).json()["projects"]}
    assert {"admin", "p1", "p2"} <= names
    assert cloud.client.get("/v1/flavors/p2.secret", headers=admin).status_code == 200


def test_admin_role_on_an_ordinary_project_is_not_cloud_admin(cloud, tenants):
    admin = tenants["admin"]
    boss = make_user(cloud, admin, "boss", "p1", role="admin")
    assert cloud.client.get("/v1/projects/p2", headers=boss).status_code == 404
    assert cloud.client.post("/v1/projects", json={"name": "p9"}, headers=boss).status_code == 403
    # but within p1 they act at least as a member
    assert cloud.client.post("/v1/keypairs", json={"name": "kb"}, headers=boss).status_code == 201
