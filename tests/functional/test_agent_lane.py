# ruff: noqa: F811  (pytest fixtures imported from test_hot_paths)
"""The agents' hot routes (heartbeat, desired, report) are served by ``nubes.api.agentface.lane``
without FastAPI's router: they must keep every promise the other routes make — the same error
bodies and codes, the request id, the body limit, the metrics labels — and the same answers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import delete, update

from nubes.api.agentface import lane
from nubes.domain.errors import NotAuthenticated
from nubes.hosts.service import AUTH_CACHE_SECONDS, HostService
from nubes.store.models import Host
from tests.functional.helpers import statements_of_this_thread
from tests.functional.test_hot_paths import agent_headers, boot, host, image  # noqa: F401


def error(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def test_the_lane_answers_the_hot_routes_and_leaves_the_rest_to_fastapi(cloud, host, monkeypatch):
    served: list[str] = []
    original = lane.AgentLane.__call__

    async def spy(self: Any, scope: Any, receive: Any, send: Any) -> None:
        await original(self, scope, receive, send)
        if isinstance(scope.get("route"), lane.LaneRoute):
            served.append(scope["path"])

    monkeypatch.setattr(lane.AgentLane, "__call__", spy)
    headers = agent_headers(host)
    assert cloud.client.post("/v1/agent/heartbeat", json={}, headers=headers).status_code == 200
    assert cloud.client.get("/v1/agent/desired?wait=0", headers=headers).status_code == 200
    assert cloud.client.get("/v1/agent/probes", headers=headers).status_code == 200
    assert served == ["/v1/agent/heartbeat", "/v1/agent/desired"]


def test_heartbeat_answer(cloud, host):
    r = cloud.client.post("/v1/agent/heartbeat", json={"metrics": {}}, headers=agent_headers(host))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"].startswith("req-")
    assert set(r.json()) == {"known", "probes_version"}
    assert r.json()["known"] is True


def test_desired_and_report_carry_an_instance_through_its_boot(cloud, host, image):
    server = boot(cloud)
    headers = agent_headers(host)
    r = cloud.client.get("/v1/agent/desired", params={"seen": -1, "wait": 0}, headers=headers)
    assert r.status_code == 200, r.text
    desired = r.json()
    (item,) = desired["instances"]
    assert item["id"] == server["id"]
    assert item["desired_power"] == "running"
    assert item["image"]["id"]
    assert desired["networks"]["metadata_url"] == "http://testserver"
    # a long poll with nothing new ends "unchanged"
    idle = cloud.client.get(
        "/v1/agent/desired", params={"seen": desired["version"], "wait": 0.05}, headers=headers
    ).json()
    assert idle["unchanged"] is True
    assert idle["instances"] == []
    r = cloud.client.post(
        f"/v1/agent/instances/{server['id']}/report", json={"power": "running"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"known": True}
    shown = cloud.client.get(f"/v1/servers/{server['id']}", headers=cloud.admin).json()
    assert shown["state"] == "running"
    r = cloud.client.post(
        "/v1/agent/instances/no-such-id/report", json={"power": "running"}, headers=headers
    )
    assert r.json() == {"known": False}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no token"),
        ({"Authorization": "Basic abc"}, "no token"),
        ({"Authorization": "Bearer host.nope.nope"}, "host credential refused"),
        ({"X-Auth-Token": "garbage"}, "host credential refused"),
    ],
)
def test_a_missing_or_wrong_credential_is_401(cloud, headers, message):
    for method, path in [
        ("POST", "/v1/agent/heartbeat"),
        ("GET", "/v1/agent/desired"),
        ("POST", "/v1/agent/instances/x/report"),
    ]:
        r = cloud.client.request(method, path, json={}, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == 'Token realm="nubes"'
        body = error(r)
        assert message in body["message"]
        assert body["request_id"] == r.headers["x-request-id"]


def test_bad_bodies_and_queries_are_400_with_the_fields_named(cloud, host):
    headers = agent_headers(host)
    r = cloud.client.post(
        "/v1/agent/instances/x/report", json={"power": "sideways"}, headers=headers
    )
    assert r.status_code == 400
    body = error(r)
    assert body["code"] == "nubes.request.invalid"
    assert body["details"][0]["field"] == "power", body
    r = cloud.client.post("/v1/agent/heartbeat", json={"metrics": {}, "bogus": 1}, headers=headers)
    assert r.status_code == 400
    assert error(r)["details"][0]["field"] == "bogus"
    r = cloud.client.post(
        "/v1/agent/heartbeat",
        content=b"{not json",
        headers={**headers, "content-type": "application/json"},
    )
    assert r.status_code == 400
    assert error(r)["message"] == "body: is not valid JSON"
    r = cloud.client.post("/v1/agent/heartbeat", headers=headers)
    assert r.status_code == 400
    assert error(r)["message"] == "body: Field required"
    r = cloud.client.get("/v1/agent/desired", params={"seen": "many"}, headers=headers)
    assert r.status_code == 400
    assert error(r)["details"][0]["field"] == "seen (query)"
    r = cloud.client.get("/v1/agent/desired", params={"wait": 99}, headers=headers)
    assert r.status_code == 400
    assert "wait: 0 to 30 seconds" in error(r)["message"]


def test_a_wrong_method_is_405_and_a_body_over_the_limit_413(cloud, host):
    headers = agent_headers(host)
    r = cloud.client.get("/v1/agent/heartbeat", headers=headers)
    assert r.status_code == 405
    assert error(r)["message"] == "GET is not allowed on /v1/agent/heartbeat"
    limit = cloud.services.settings.max_body_bytes
    r = cloud.client.post(
        "/v1/agent/heartbeat",
        content=b'{"metrics": {"A": "' + b"x" * limit + b'"}}',
        headers={**headers, "content-type": "application/json"},
    )
    assert r.status_code == 413
    assert error(r)["code"] == "nubes.request.too_large"


def test_an_unexpected_failure_is_a_500_without_a_traceback(cloud, host, monkeypatch):
    def broken(*_: Any, **__: Any) -> bool:
        raise RuntimeError("boom: secret detail")

    monkeypatch.setattr(cloud.services.hosts, "beat_in_memory", broken)
    r = cloud.client.post("/v1/agent/heartbeat", json={}, headers=agent_headers(host))
    assert r.status_code == 500
    body = error(r)
    assert body["code"] == "nubes.internal.error"
    assert "boom" not in r.text
    assert body["request_id"] in body["message"]


def test_metrics_label_the_lane_routes_by_template(cloud, host):
    headers = agent_headers(host)
    cloud.client.post("/v1/agent/instances/abc/report", json={"power": "running"}, headers=headers)
    cloud.client.post("/v1/agent/heartbeat", json={}, headers=headers)
    text = cloud.client.get("/metrics").text
    assert (
        'nubes_http_requests_total{method="POST",route="/v1/agent/instances/{instance_id}/report",'
        'status="200"}' in text
    )
    assert 'route="/v1/agent/heartbeat",status="200"' in text


def test_verified_credentials_are_renewed_in_one_read_and_dropped_when_the_host_goes(cloud, host):
    """One read of the due hosts' updated_at; a second of the rows that moved, whole."""
    # its own service: the app's loop renews the app's cache every 2 s, whatever the test does
    hosts = HostService(cloud.services.core)
    credential = host["Authorization"].removeprefix("Bearer ")
    assert hosts.authenticate(credential).id == host["id"]
    assert hosts.revalidate_credentials() == 0  # not due: nothing read

    with cloud.services.db.transaction() as session:  # changed behind the cached copy
        session.execute(update(Host).where(Host.id == host["id"]).values(error="seen"))
    cached = hosts._verified[credential][1]
    hosts._verified[credential] = (time.monotonic() + 1, cached)  # about to expire
    with statements_of_this_thread(cloud.services.db.engine, "SELECT") as selects:
        assert hosts.revalidate_credentials() == 1
    assert len(selects) == 2
    expiry, renewed = hosts._verified[credential]
    assert expiry > time.monotonic() + AUTH_CACHE_SECONDS - 1
    assert renewed.error == "seen"  # the host as it now is

    hosts._verified[credential] = (time.monotonic() + 1, renewed)  # unchanged since
    with statements_of_this_thread(cloud.services.db.engine, "SELECT") as selects:
        assert hosts.revalidate_credentials() == 1
    assert len(selects) == 1
    assert hosts._verified[credential][1] is renewed  # its row not read nor rebuilt again
    assert hosts._verified[credential][0] > time.monotonic() + AUTH_CACHE_SECONDS - 1

    with cloud.services.db.transaction() as session:  # deleted through another controller
        session.execute(delete(Host).where(Host.id == host["id"]))
    hosts._verified[credential] = (time.monotonic() + 1, renewed)
    assert hosts.revalidate_credentials() == 0
    assert hosts.cached(credential) is None
    with pytest.raises(NotAuthenticated):
        hosts.authenticate(credential)
