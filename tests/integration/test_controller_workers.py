"""A controller with several worker processes on one port: an agent's long poll wakes
whichever worker took the change; a dead worker is replaced; the workers never outlive their
supervisor."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.cloudproc import CloudProcesses

pytestmark = pytest.mark.integration

WORKERS = 2


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def procs(tmp_path):
    cloud = CloudProcesses(tmp_path)
    config = cloud.state / "nubes.toml"
    config.write_text(f"workers = {WORKERS}\n" + config.read_text())
    workers: set[int] = set()
    try:
        cloud.start_controller()
        supervisor = cloud.procs["controller"].pid
        workers = cloud.wait(
            lambda: len(children(supervisor)) == WORKERS and children(supervisor),
            30,
            "the workers",
        )
        yield cloud
    finally:
        cloud.close()
        for pid in workers:  # killed with their supervisor (PR_SET_PDEATHSIG)
            CloudProcesses.wait(lambda pid=pid: not alive(pid), 10, f"worker {pid} to end")


def fake_host(cloud: CloudProcesses) -> dict[str, str]:
    token = cloud.call("POST", "/v1/host-tokens", json={})["token"]
    facts = {"token": token, "driver": "fake", "vcpus": 8, "ram_mb": 8192, "disk_gb": 100}
    facts["capabilities"] = {"image_kinds": ["disk", "rootfs"]}
    joined = cloud.http.post("/v1/agent/join", json=facts).json()
    headers = {"Authorization": f"Bearer {joined['credential']}"}
    cloud.http.post("/v1/agent/heartbeat", json={"metrics": {}}, headers=headers)
    return headers


def test_a_create_through_any_worker_wakes_the_long_poll_on_any_other(procs):
    """Each round uses fresh connections, which the kernel spreads over the workers: without
    the workers telling each other, about half the rounds would wait the poll out (10 s)."""
    image = procs.call("POST", "/v1/images", json={"name": "tiny", "visibility": "public"})
    procs.call("PUT", f"/v1/images/{image['id']}/file", params={"kind": "disk"}, content=b"x")
    host = fake_host(procs)
    for round_ in range(6):
        with httpx.Client(base_url=procs.url, timeout=30) as poller:
            seen = poller.get("/v1/agent/desired", headers=host).json()["version"]
            answer: dict[str, object] = {}

            def poll(
                poller: httpx.Client = poller, seen: int = seen, answer: dict[str, object] = answer
            ) -> None:
                started = time.monotonic()
                url = f"/v1/agent/desired?seen={seen}&wait=10"
                answer.update(poller.get(url, headers=host).json())
                answer["waited"] = time.monotonic() - started

            thread = threading.Thread(target=poll)
            thread.start()
            time.sleep(0.3)  # the poll is waiting
            with httpx.Client(base_url=procs.url, timeout=30, headers=procs.admin) as creator:
                body = {"name": f"r{round_}", "image": "tiny", "flavor": "m1.tiny"}
                r = creator.post("/v1/servers", json={**body, "networks": "none"})
                assert r.status_code == 202, r.text
            thread.join(30)
        assert answer["waited"] < 5, f"round {round_}: the long poll was not woken"
        assert answer["unchanged"] is False
        assert f"r{round_}" in [i["name"] for i in answer["instances"]]  # type: ignore[union-attr]


def test_a_dead_worker_is_replaced_and_stopping_ends_them_all(procs):
    supervisor = procs.procs["controller"].pid
    first = children(supervisor)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    replaced = procs.wait(
        lambda: (now := children(supervisor)) != first and len(now) == WORKERS and now,
        30,
        "a new worker",
    )
    assert victim not in replaced
    for _ in range(20):  # every connection is answered, whichever worker takes it
        assert httpx.get(f"{procs.url}/healthz", timeout=10).text == "ok"
    os.kill(supervisor, signal.SIGTERM)
    assert procs.procs["controller"].wait(20) == 0
    for pid in replaced:
        procs.wait(lambda pid=pid: not alive(pid), 10, f"worker {pid} to stop")


def test_workers_die_with_a_killed_supervisor_and_a_restart_takes_the_port(procs):
    supervisor = procs.procs["controller"].pid
    workers = children(supervisor)
    procs.kill("controller")
    for pid in workers:
        procs.wait(lambda pid=pid: not alive(pid), 10, f"worker {pid} to die")
    procs.start_controller()  # the same port, at once
    assert procs.http.get("/healthz").text == "ok"
