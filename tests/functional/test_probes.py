"""Probes end to end in one process: `nubes host sync`, a real agent (fake driver) fetching and
running them, and the metrics and probe errors in `host show`, the API and /metrics."""

from __future__ import annotations

import io
import re
import tarfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nubes.agent.hypervisors.base import ImageKind, InstanceSpec
from nubes.agent.run import Agent
from nubes.hosts import service
from nubes.store.models import utcnow
from tests.functional.cli_harness import Run, admin_runner, data, ok
from tests.functional.helpers import error_of, make_project, make_user

DOCS = Path(__file__).parents[2] / "docs" / "probes.md"


def documented_probe() -> str:
    """The MY_RVMS example of docs/probes.md, so the documented probe is the tested one."""
    blocks = re.findall(r"```sh\n(#!/bin/sh\n.*?)```", DOCS.read_text(), re.DOTALL)
    assert blocks, "docs/probes.md lost its MY_RVMS example"
    return str(blocks[0])


def put(root: Path, name: str, text: str, mode: int = 0o755) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def probes_dir(cloud: Any) -> Path:
    return Path(cloud.services.settings.state_dir) / "probes"


@pytest.fixture
def agent(cloud: Any, tmp_path: Path) -> Any:
    token = cloud.client.post("/v1/host-tokens", json={}, headers=cloud.admin).json()["token"]
    joined = Agent.start(
        tmp_path / "agent",
        url="http://testserver",
        token=token,
        driver="fake",
        http=TestClient(cloud.client.app),
    )
    yield joined
    joined.reconciler.close()


@pytest.fixture
def nubes(cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    return admin_runner(cloud, monkeypatch, tmp_path)


def host_of(cloud: Any, name: str = "node-1") -> dict[str, Any]:
    r = cloud.client.get(f"/v1/hosts/{name}", headers=cloud.admin)
    assert r.status_code == 200, r.text
    return dict(r.json())


def run_a_guest(agent: Agent, instance_id: str) -> None:
    spec = InstanceSpec(
        id=instance_id,
        name=instance_id,
        hostname=instance_id,
        vcpus=1,
        ram_mb=64,
        disk_gb=1,
        image_id="img",
        image_path=Path("/nonexistent"),
        image_kind=ImageKind.disk,
    )
    agent.driver.create(spec)
    agent.driver.start(spec)


def test_sync_is_for_cloud_admins(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "team")
    member = make_user(cloud, admin, "alice", "team")
    r = cloud.client.post("/v1/hosts/sync", headers=member)
    assert r.status_code == 403
    assert error_of(r)["code"] == "nubes.policy.forbidden"


def test_sync_of_no_probes_dir_syncs_none(cloud):
    r = cloud.client.post("/v1/hosts/sync", headers=cloud.admin)
    assert r.status_code == 200, r.text
    assert r.json()["probes"] == []
    assert re.fullmatch(r"[0-9a-f]{64}", r.json()["version"])


@pytest.mark.parametrize(
    ("name", "mode", "text", "named"),
    [
        ("fake/README", 0o644, "read me\n", "fake/README: not executable"),
        ("fake/x.sh~", 0o755, "#!/bin/sh\n", "'fake/x.sh~'"),
        ("kvm/x.sh", 0o755, "#!/bin/sh\n", "kvm: probes go in a directory named"),
    ],
)
def test_sync_refuses_unsafe_probes_and_names_the_file(cloud, probes_dir, name, mode, text, named):
    put(probes_dir, "common/fine.sh", "#!/bin/sh\necho A=1\n")
    put(probes_dir, name, text, mode)
    r = cloud.client.post("/v1/hosts/sync", headers=cloud.admin)
    assert r.status_code == 400
    error = error_of(r)
    assert error["code"] == "nubes.probe.invalid"
    assert named in error["message"]


def test_synced_probes_run_on_the_host_and_show_everywhere(
    cloud, agent, probes_dir, nubes, monkeypatch
):
    put(probes_dir, "common/my_rvms.sh", documented_probe())
    put(probes_dir, "fake/broken.sh", "#!/bin/sh\necho GOOD=7\necho FOO=abc\n")
    put(probes_dir, "qemu/not_here.sh", "#!/bin/sh\necho QEMU_ONLY=1\n")
    assert agent.beat() is False  # nothing synced yet: nothing to fetch
    assert "MY_RVMS" not in host_of(cloud)["metrics"]

    synced = data(nubes("host", "sync", "-f", "json"))
    assert synced["probes"] == ["common/my_rvms.sh", "fake/broken.sh", "qemu/not_here.sh"]
    assert synced["changed"] is True
    assert agent.beat() is True  # fetched and installed: run them at once
    assert agent.monitor.probes.version == synced["version"]
    assert agent.beat() is False

    host = host_of(cloud)
    assert host["metrics"]["MY_RVMS"] == 0
    assert host["metrics"]["GOOD"] == 7  # the good line of a probe with a bad one
    assert "QEMU_ONLY" not in host["metrics"]  # another kind's probe never reaches it
    assert host["metrics"]["HYPERVISOR"] == "fake"
    assert host["metrics"]["FREE_CPU"] >= 0
    assert host["probe_errors"] == {"fake/broken.sh": "line 2: 'FOO=abc' is not a number"}
    assert host["metrics_at"] is not None

    # a guest starts: the value changes, the shape does not, so it waits for the next write
    run_a_guest(agent, "guest-1")
    agent.beat()
    assert host_of(cloud)["metrics"]["MY_RVMS"] == 0
    later = utcnow() + timedelta(seconds=service.WRITE_EVERY + 1)
    monkeypatch.setattr(service, "utcnow", lambda: later)
    agent.beat()
    assert host_of(cloud)["metrics"]["MY_RVMS"] == 0  # due: queued for the next flush
    cloud.services.hosts.flush_heartbeats()
    assert host_of(cloud)["metrics"]["MY_RVMS"] == 1

    text = cloud.client.get("/metrics").text
    assert 'nubes_host_metric{host="node-1",metric="MY_RVMS"} 1.0' in text
    assert re.search(r'nubes_host_metric\{host="node-1",metric="FREE_MEMORY"\} \d', text)
    assert 'nubes_host_probe_errors{host="node-1"} 1.0' in text
    assert 'metric="HYPERVISOR"' not in text  # strings are not gauges

    shown = ok(nubes("host", "show", "node-1")).stdout
    assert re.search(r"MY_RVMS\s*│\s*1\b", shown)
    assert "Probe errors" in shown
    assert "fake/broken.sh" in shown
    assert "is not a number" in shown
    said = ok(nubes("host", "sync")).stdout
    assert "(unchanged): 3 probe(s)" in said


def test_mended_probe_clears_its_error_at_once(cloud, agent, probes_dir):
    put(probes_dir, "fake/p.sh", "#!/bin/sh\nexit 3\n")
    cloud.client.post("/v1/hosts/sync", headers=cloud.admin)
    agent.beat()
    agent.beat()
    assert host_of(cloud)["probe_errors"] == {"fake/p.sh": "exited 3"}
    put(probes_dir, "fake/p.sh", "#!/bin/sh\necho P=1\n")
    cloud.client.post("/v1/hosts/sync", headers=cloud.admin)
    cloud.services.hosts.probes._version = None  # as after VERSION_TTL
    assert agent.beat() is True
    agent.beat()
    host = host_of(cloud)
    assert (host["probe_errors"], host["metrics"]["P"]) == ({}, 1)


def test_the_agent_gets_only_common_and_its_kind(cloud, agent, probes_dir):
    for name in ("common/c", "fake/f", "qemu/q", "lxc/l"):
        put(probes_dir, name, "#!/bin/sh\necho X=1\n")
    version = cloud.client.post("/v1/hosts/sync", headers=cloud.admin).json()["version"]
    got_version, bundle = agent.client.download_probes()
    assert got_version == version
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        assert tar.getnames() == ["common/c", "fake/f"]


def test_a_bundle_download_needs_a_host_credential(cloud):
    r = cloud.client.get("/v1/agent/probes", headers=cloud.admin)
    assert r.status_code == 401


def test_heartbeat_writes_are_coalesced_unless_the_shape_changes(cloud, agent):
    client = agent.client
    client.heartbeat({"A": 1})
    first = host_of(cloud)
    client.heartbeat({"A": 2})
    assert host_of(cloud)["metrics"] == {"A": 1}  # written at most every 12 s
    client.heartbeat({"A": 3}, probe_errors={"fake/x": "timed out after 5 s"})
    host = host_of(cloud)
    assert (host["metrics"], host["probe_errors"]) == ({"A": 3}, {"fake/x": "timed out after 5 s"})
    assert host["metrics_at"] > first["metrics_at"]
    answer = client.heartbeat({"A": 3}, probe_errors={"fake/x": "exited 1"})
    assert answer["probes_version"] == ""  # nothing synced yet
    client.heartbeat({}, leaving=True)
    host = host_of(cloud)
    assert host["state"] == "offline"
    assert host["metrics"] == {"A": 3}  # the last metrics stay, metrics_at dates them
    assert "nubes_host_metric{" not in cloud.client.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"metrics": {"FOO": "abc"}}', "metrics.FOO: must be a number"),
        (b'{"metrics": {"FOO": NaN}}', "metrics.FOO: must be a finite number"),
        (b'{"metrics": {"FOO": Infinity}}', "metrics.FOO: must be a finite number"),
        (b'{"metrics": {"foo": 1}}', "metrics.foo: a metric name"),
        (b'{"metrics": {}, "probe_errors": {"p": 3}}', "probe_errors"),
    ],
)
def test_a_bad_heartbeat_is_refused_naming_the_field(cloud, agent, body, field):
    r = cloud.client.post(
        "/v1/agent/heartbeat",
        content=body,
        headers={
            "Authorization": f"Bearer {agent.client.credential}",
            "Content-Type": "application/json",
        },
    )
    assert r.status_code == 400, r.text
    assert field in error_of(r)["message"]
