"""What every request gets: request ids, one error shape, field-named validation errors, body
limits, pagination, health, metrics, OpenAPI."""

from __future__ import annotations

import pytest

from tests.functional.helpers import error_of, make_project


def test_request_id_on_success_and_error(cloud):
    ok = cloud.client.get("/healthz")
    assert ok.status_code == 200
    assert ok.text == "ok"
    assert ok.headers["x-request-id"].startswith("req-")
    bad = cloud.client.get("/v1/no-such-thing")
    assert bad.status_code == 404
    assert error_of(bad)["code"] == "nubes.request.not_found"
    assert bad.headers["x-request-id"] != ok.headers["x-request-id"]


def test_forged_request_id_is_replaced(cloud):
    r = cloud.client.get("/healthz", headers={"X-Request-Id": "x\nforged"})
    assert r.headers["x-request-id"].startswith("req-")
    good = "req-12345678-1234-1234-1234-123456789abc"
    assert (
        cloud.client.get("/healthz", headers={"X-Request-Id": good}).headers["x-request-id"] == good
    )


def test_wrong_method_is_4xx_with_error_body(cloud):
    r = cloud.client.put("/v1/flavors", headers=cloud.admin)
    assert r.status_code == 405
    error_of(r)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": 5}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a" * 65}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "-leading"}, "name"),
        ({"name": "ok", "enabled": "maybe"}, "enabled"),
        ({"name": "ok", "surprise": 1}, "surprise"),
    ],
)
def test_validation_errors_name_the_field(cloud, body, field):
    r = cloud.client.post("/v1/projects", json=body, headers=cloud.admin)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["code"] == "nubes.request.invalid"
    assert field in err["message"]
    assert any(d["field"].startswith(field) for d in err["details"])


def test_malformed_json_is_400(cloud):
    r = cloud.client.post(
        "/v1/projects",
        content=b"{not json",
        headers={**cloud.admin, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert "JSON" in error_of(r)["message"]


def test_oversize_body_is_413_declared_and_streamed(cloud):
    big = b'{"name": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    r = cloud.client.post(
        "/v1/projects", content=big, headers={**cloud.admin, "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert error_of(r)["code"] == "nubes.request.too_large"

    def chunks():
        for _ in range(40):
            yield b"a" * 65536

    r = cloud.client.post(
        "/v1/projects",
        content=chunks(),
        headers={**cloud.admin, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert error_of(r)["code"] == "nubes.request.too_large"


def test_unknown_ids_are_404_with_codes(cloud):
    admin = cloud.admin
    for path, code in [
        ("/v1/projects/nope", "nubes.project.not_found"),
        ("/v1/users/nope", "nubes.user.not_found"),
        ("/v1/flavors/nope", "nubes.flavor.not_found"),
        ("/v1/keypairs/nope", "nubes.keypair.not_found"),
        ("/v1/quotas/nope", "nubes.project.not_found"),
    ]:
        r = cloud.client.get(path, headers=admin)
        assert r.status_code == 404, path
        assert error_of(r)["code"] == code


def test_pagination_with_limit_and_marker(cloud):
    admin = cloud.admin
    for i in range(7):
        make_project(cloud, admin, f"page-{i}")
    seen, marker = [], None
    while True:
        params = {"limit": 3, "name": None}
        params = {"limit": 3} | ({"marker": marker} if marker else {})
        body = cloud.client.get("/v1/projects", params=params, headers=admin).json()
        seen += [p["name"] for p in body["projects"]]
        marker = body["next_marker"]
        if marker is None:
            break
    assert seen == sorted(["admin", *(f"page-{i}" for i in range(7))])
    r = cloud.client.get("/v1/projects", params={"marker": "nope"}, headers=admin)
    assert r.status_code == 400
    assert "marker" in error_of(r)["message"]
    r = cloud.client.get("/v1/projects", params={"limit": 0}, headers=admin)
    assert r.status_code == 400
    assert "limit" in error_of(r)["message"]


def test_filters_name_and_status(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "on")
    cloud.client.post("/v1/projects", json={"name": "off", "enabled": False}, headers=admin)
    r = cloud.client.get("/v1/projects", params={"status": "disabled"}, headers=admin)
    assert [p["name"] for p in r.json()["projects"]] == ["off"]
    assert r.json()["projects"][0]["status"] == "disabled"
    r = cloud.client.get("/v1/projects", params={"name": "on"}, headers=admin)
    assert [p["name"] for p in r.json()["projects"]] == ["on"]
    r = cloud.client.get("/v1/projects", params={"status": "sleepy"}, headers=admin)
    assert r.status_code == 400


def test_metrics_count_requests_by_route(cloud):
    cloud.client.get("/v1/flavors", headers=cloud.admin)
    text = cloud.client.get("/metrics").text
    assert 'nubes_http_requests_total{method="GET",route="/v1/flavors",status="200"}' in text
    assert "nubes_http_request_duration_seconds_bucket" in text


def test_openapi_and_docs_are_served(cloud):
    spec = cloud.client.get("/v1/openapi.json").json()
    assert spec["info"]["title"] == "nubes"
    assert "/v1/auth/tokens" in spec["paths"]
    assert cloud.client.get("/v1/docs").status_code == 200


def test_status_for_admin(cloud):
    body = cloud.client.get("/v1/status", headers=cloud.admin).json()
    assert body["database"]["revision"] == body["database"]["head"]
    assert body["problems"] == []
    assert body["counts"]["flavors"] == 5


def test_database_down_is_503_not_500(cloud, monkeypatch):
    from sqlalchemy.exc import OperationalError

    token = cloud.admin

    def broken(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(cloud.services.db, "_sessions", broken)
    r = cloud.client.get("/v1/flavors", headers=token)
    assert r.status_code == 503, r.text
    assert error_of(r)["code"] == "nubes.service.unavailable"


def test_nul_characters_are_never_a_server_error(cloud):
    """PostgreSQL cannot store NUL in text; whatever the engine, the answer is a 4xx."""
    admin = cloud.admin
    r = cloud.client.get("/v1/projects/a%00b", headers=admin)
    assert 400 <= r.status_code < 500, r.text
    r = cloud.client.post(
        "/v1/projects", json={"name": "nul", "description": "a\x00b"}, headers=admin
    )
    assert r.status_code in (201, 400), r.text
    if r.status_code == 400:
        assert "cannot be stored" in error_of(r)["message"]
    r = cloud.client.post("/v1/auth/tokens", json={"username": "a\x00", "password": "b\x00"})
    assert r.status_code in (400, 401), r.text
