"""Small builders used by the functional tests."""

from __future__ import annotations

from typing import Any

from tests.conftest import Cloud

PASSWORD = "correct-horse-1"


def make_project(cloud: Cloud, admin: dict[str, str], name: str) -> dict[str, Any]:
    r = cloud.client.post("/v1/projects", json={"name": name}, headers=admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def make_user(
    cloud: Cloud, admin: dict[str, str], name: str, project: str, role: str = "member"
) -> dict[str, str]:
    """Create a user with ``role`` on ``project``; return its auth headers."""
    r = cloud.client.post(
        "/v1/users",
        json={"name": name, "password": PASSWORD, "project": project, "role": role},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    return cloud.as_(cloud.token(name, PASSWORD, project))


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "request_id"} <= set(body["error"]), body
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return dict(body["error"])
