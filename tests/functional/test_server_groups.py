"""Server groups through the API, and the membership calls instance create and delete make."""

from __future__ import annotations

from typing import Any

import pytest

from nubes.domain.errors import Conflict, NotFound, QuotaExceeded
from tests.functional.helpers import error_of, make_project, make_user
from tests.functional.test_aggregates import make_host, make_instance, set_instance_state


@pytest.fixture
def two_projects(cloud) -> dict[str, Any]:
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    make_project(cloud, admin, "p2")
    return {
        "admin": admin,
        "u1": make_user(cloud, admin, "u1", "p1"),
        "r1": make_user(cloud, admin, "r1", "p1", role="reader"),
        "u2": make_user(cloud, admin, "u2", "p2"),
    }


def in_use(cloud: Any, headers: dict[str, str], project: str) -> dict[str, int]:
    return dict(cloud.client.get(f"/v1/quotas/{project}", headers=headers).json()["in_use"])


def ctx_of(cloud: Any, headers: dict[str, str]) -> Any:
    return cloud.services.auth.validate(headers["X-Auth-Token"])


def test_server_group_create_list_show_delete(cloud, two_projects):
    u1, r1 = two_projects["u1"], two_projects["r1"]
    r = cloud.client.post(
        "/v1/server-groups", json={"name": "web", "policy": "anti-affinity"}, headers=u1
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["name"], made["policy"], made["members"]) == ("web", "anti-affinity", [])
    for policy in ("affinity", "soft-affinity", "soft-anti-affinity"):
        r = cloud.client.post(
            "/v1/server-groups", json={"name": policy, "policy": policy}, headers=u1
        )
        assert r.status_code == 201, r.text
    r = cloud.client.post(
        "/v1/server-groups", json={"name": "web", "policy": "affinity"}, headers=u1
    )
    assert r.status_code == 409
    assert error_of(r)["code"] == "nubes.server_group.exists"

    listed = cloud.client.get("/v1/server-groups", headers=r1).json()
    assert [g["name"] for g in listed["server_groups"]] == [
        "affinity",
        "soft-affinity",
        "soft-anti-affinity",
        "web",
    ]
    page = cloud.client.get("/v1/server-groups?limit=3", headers=r1).json()
    rest = cloud.client.get(
        f"/v1/server-groups?limit=3&marker={page['next_marker']}", headers=r1
    ).json()
    assert [g["name"] for g in rest["server_groups"]] == ["web"]
    named = cloud.client.get("/v1/server-groups?name=web", headers=r1).json()["server_groups"]
    assert [g["id"] for g in named] == [made["id"]]

    assert cloud.client.get("/v1/server-groups/web", headers=r1).json()["id"] == made["id"]
    assert cloud.client.get(f"/v1/server-groups/{made['id']}", headers=r1).status_code == 200
    assert in_use(cloud, u1, "p1")["server_groups"] == 4
    assert cloud.client.delete("/v1/server-groups/web", headers=u1).status_code == 204
    assert in_use(cloud, u1, "p1")["server_groups"] == 3
    r = cloud.client.get("/v1/server-groups/web", headers=u1)
    assert r.status_code == 404
    assert error_of(r)["code"] == "nubes.server_group.not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "g", "policy": "together"}, "policy"),
        ({"name": "g"}, "policy"),
        ({"name": "bad name", "policy": "affinity"}, "name"),
        ({"name": "g", "policy": "affinity", "rules": {}}, "rules"),
    ],
)
def test_bad_server_group_input_is_400(cloud, two_projects, body, field):
    r = cloud.client.post("/v1/server-groups", json=body, headers=two_projects["u1"])
    assert r.status_code == 400, r.text
    assert field in error_of(r)["message"]


def test_groups_are_per_project_and_readers_only_read(cloud, two_projects):
    u1, r1, u2, admin = (two_projects[k] for k in ("u1", "r1", "u2", "admin"))
    mine = cloud.client.post(
        "/v1/server-groups", json={"name": "g", "policy": "affinity"}, headers=u1
    ).json()
    for ref in ("g", mine["id"]):
        assert cloud.client.get(f"/v1/server-groups/{ref}", headers=u2).status_code == 404
        assert cloud.client.delete(f"/v1/server-groups/{ref}", headers=u2).status_code == 404
    assert cloud.client.get("/v1/server-groups", headers=u2).json()["server_groups"] == []
    # the other project may use the same name
    r = cloud.client.post("/v1/server-groups", json={"name": "g", "policy": "affinity"}, headers=u2)
    assert r.status_code == 201

    r = cloud.client.post("/v1/server-groups", json={"name": "h", "policy": "affinity"}, headers=r1)
    assert r.status_code == 403
    assert error_of(r)["code"] == "nubes.policy.forbidden"
    assert cloud.client.delete("/v1/server-groups/g", headers=r1).status_code == 403

    everything = cloud.client.get("/v1/server-groups?all_projects=true", headers=admin).json()
    assert len(everything["server_groups"]) == 2
    assert cloud.client.get(f"/v1/server-groups/{mine['id']}", headers=admin).status_code == 200
    # a member's all_projects is ignored: still only their project
    own = cloud.client.get("/v1/server-groups?all_projects=true", headers=u1).json()
    assert [g["id"] for g in own["server_groups"]] == [mine["id"]]


def test_server_group_quota(cloud, two_projects):
    u1, admin = two_projects["u1"], two_projects["admin"]
    r = cloud.client.patch("/v1/quotas/p1", json={"limits": {"server_groups": 2}}, headers=admin)
    assert r.status_code == 200, r.text
    for name in ("a", "b"):
        body = {"name": name, "policy": "affinity"}
        assert cloud.client.post("/v1/server-groups", json=body, headers=u1).status_code == 201
    r = cloud.client.post("/v1/server-groups", json={"name": "c", "policy": "affinity"}, headers=u1)
    assert r.status_code == 403
    err = error_of(r)
    assert err["code"] == "nubes.quota.exceeded"
    assert "server_groups" in err["message"]
    cloud.client.delete("/v1/server-groups/a", headers=u1)
    r = cloud.client.post("/v1/server-groups", json={"name": "c", "policy": "affinity"}, headers=u1)
    assert r.status_code == 201


# membership: what instance create and delete call ------------------------------------------------


def test_members_are_charged_shown_viewed_and_released(cloud, two_projects):
    u1, u2, admin = two_projects["u1"], two_projects["u2"], two_projects["admin"]
    groups = cloud.services.server_groups
    h1, h2 = make_host(cloud, "node-1"), make_host(cloud, "node-2")
    group = cloud.client.post(
        "/v1/server-groups", json={"name": "web", "policy": "anti-affinity"}, headers=u1
    ).json()
    cloud.client.patch("/v1/quotas/p1", json={"limits": {"server_group_members": 3}}, headers=admin)
    a = make_instance(cloud, "p1", "web-a", host_id=h1)
    b = make_instance(cloud, "p1", "web-b", host_id=h2)
    c = make_instance(cloud, "p1", "web-c")  # not placed (no host took it)
    d = make_instance(cloud, "p1", "web-d", host_id=h1)
    ctx = ctx_of(cloud, u1)
    with cloud.services.db.transaction() as session:
        groups.add_member(session, ctx, "web", a)
        groups.add_member(session, ctx, group["id"], b)
        groups.add_member(session, ctx, "web", c)
    with pytest.raises(QuotaExceeded), cloud.services.db.transaction() as session:
        groups.add_member(session, ctx, "web", d)
    assert in_use(cloud, u1, "p1")["server_group_members"] == 3

    shown = cloud.client.get("/v1/server-groups/web", headers=u1).json()
    assert [(m["name"], m["id"]) for m in shown["members"]] == [
        ("web-a", a),
        ("web-b", b),
        ("web-c", c),
    ]
    with cloud.services.db.read() as session:
        view = groups.group_view(session, group["id"])
    assert (view.policy, view.host_ids, view.members) == ("anti-affinity", {h1, h2}, 3)

    # an instance being deleted leaves: the group no longer counts it, its quota comes back
    set_instance_state(cloud, a, "deleted")
    with cloud.services.db.transaction() as session:
        assert groups.remove_member(session, a) is True
        assert groups.remove_member(session, a) is False
    with cloud.services.db.read() as session:
        assert groups.group_view(session, group["id"]).host_ids == {h2}
    assert in_use(cloud, u1, "p1")["server_group_members"] == 2
    names = [
        m["name"] for m in cloud.client.get("/v1/server-groups/web", headers=u1).json()["members"]
    ]
    assert names == ["web-b", "web-c"]

    # deleting the group keeps its servers and gives every quota back
    assert cloud.client.delete("/v1/server-groups/web", headers=u1).status_code == 204
    usage = in_use(cloud, u1, "p1")
    assert (usage["server_groups"], usage["server_group_members"]) == (0, 0)
    servers = cloud.client.get("/v1/servers", headers=u1).json()["servers"]
    assert {s["name"] for s in servers} >= {"web-b", "web-c"}
    with cloud.services.db.transaction() as session:
        assert groups.remove_member(session, b) is False
    assert in_use(cloud, u2, "p2")["server_group_members"] == 0


def test_add_member_refuses_other_projects_and_double_membership(cloud, two_projects):
    u1, u2 = two_projects["u1"], two_projects["u2"]
    groups = cloud.services.server_groups
    for headers in (u1, u2):
        cloud.client.post(
            "/v1/server-groups", json={"name": "g", "policy": "affinity"}, headers=headers
        )
    other = cloud.client.get("/v1/server-groups", headers=u2).json()["server_groups"][0]["id"]
    mine = make_instance(cloud, "p1", "x")
    theirs = make_instance(cloud, "p2", "y")
    ctx = ctx_of(cloud, u1)
    with pytest.raises(NotFound, match="no server group"), cloud.services.db.transaction() as s:
        groups.add_member(s, ctx, other, mine)
    with pytest.raises(NotFound, match="no instance"), cloud.services.db.transaction() as s:
        groups.add_member(s, ctx, "g", theirs)
    with cloud.services.db.transaction() as s:
        groups.add_member(s, ctx, "g", mine)
    with (
        pytest.raises(Conflict, match="already in a server group"),
        cloud.services.db.transaction() as s,
    ):
        groups.add_member(s, ctx, "g", mine)
    assert in_use(cloud, u1, "p1")["server_group_members"] == 1
    assert in_use(cloud, u2, "p2")["server_group_members"] == 0
