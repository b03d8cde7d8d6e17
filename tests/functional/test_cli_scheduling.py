"""`nubes aggregate`, `zone`, `host set` and `server-group` against the in-process API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from tests.functional.cli_harness import Run, admin_runner, data, ok
from tests.functional.helpers import PASSWORD, make_project, make_user
from tests.functional.test_aggregates import make_host, make_instance

ERROR_LINE = re.compile(r"^error: .+ \((nubes\.[a-z_.]+), request req-[0-9a-f-]+\)$")


@pytest.fixture
def nubes(cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    return admin_runner(cloud, monkeypatch, tmp_path)


def error_of(result: Result) -> tuple[str, str]:
    """(code, line) of the one `error: …` line of a command that exited 1."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    match = ERROR_LINE.match(lines[0])
    assert match, lines[0]
    assert "Traceback" not in result.output
    return match.group(1), lines[0]


def as_user(name: str, project: str) -> dict[str, str | None]:
    return {"NUBES_USERNAME": name, "NUBES_PASSWORD": PASSWORD, "NUBES_PROJECT": project}


def test_aggregate_commands(nubes: Run, cloud: Any) -> None:
    make_host(cloud, "node-1")
    make_host(cloud, "node-2")
    made = data(
        nubes(
            "aggregate", "create", "fast", "--zone", "az1", "--property", "ssd=true", "-f", "json"
        )
    )
    assert (made["availability_zone"], made["metadata"]) == ("az1", {"ssd": "true"})
    ok(nubes("aggregate", "create", "gpus"))
    assert data(nubes("aggregate", "add-host", "fast", "node-1", "-f", "json"))["hosts"] == [
        "node-1"
    ]
    table = ok(nubes("aggregate", "add-host", "gpus", "node-2")).stdout
    assert "node-2" in table

    changed = data(
        nubes(
            "aggregate", "set", "fast", "--name", "quick", "--property", "cpu_allocation_ratio=4",
            "-f", "json",
        )
    )  # fmt: skip
    assert changed["name"] == "quick"
    assert changed["metadata"] == {"ssd": "true", "cpu_allocation_ratio": "4"}
    unset = data(nubes("aggregate", "unset", "quick", "--property", "ssd", "--zone", "-f", "json"))
    assert (unset["metadata"], unset["availability_zone"]) == ({"cpu_allocation_ratio": "4"}, None)
    assert (
        data(nubes("aggregate", "set", "quick", "--zone", "az2", "-f", "json"))["availability_zone"]
        == "az2"
    )

    listed = data(nubes("aggregate", "list", "-f", "json"))
    assert [a["name"] for a in listed] == ["gpus", "quick"]
    assert [a["name"] for a in data(nubes("aggregate", "list", "--zone", "az2", "-f", "json"))] == [
        "quick"
    ]
    table = ok(nubes("aggregate", "show", "quick")).stdout
    assert "az2" in table
    assert "node-1" in table

    code, line = error_of(nubes("aggregate", "delete", "quick"))
    assert code == "nubes.aggregate.in_use"
    assert "node-1" in line
    assert (
        "node-1"
        not in data(nubes("aggregate", "remove-host", "quick", "node-1", "-f", "json"))["hosts"]
    )
    assert "deleted aggregate quick" in ok(nubes("aggregate", "delete", "quick")).stdout
    code, _ = error_of(nubes("aggregate", "show", "quick"))
    assert code == "nubes.aggregate.not_found"

    assert nubes("aggregate", "set", "gpus").exit_code == 2  # nothing to change
    assert nubes("aggregate", "unset", "gpus").exit_code == 2
    assert nubes("aggregate", "create", "x", "--property", "novalue").exit_code == 2


def test_aggregate_errors_are_one_line(nubes: Run, cloud: Any) -> None:
    make_host(cloud, "node-1")
    ok(nubes("aggregate", "create", "r1", "--zone", "az1"))
    ok(nubes("aggregate", "create", "r2", "--zone", "az2"))
    ok(nubes("aggregate", "add-host", "r1", "node-1"))
    code, line = error_of(nubes("aggregate", "add-host", "r2", "node-1"))
    assert code == "nubes.aggregate.zone_conflict"
    assert "'az1'" in line
    assert "'az2'" in line
    code, line = error_of(nubes("aggregate", "set", "r2", "--property", "ram_allocation_ratio=0"))
    assert code == "nubes.request.invalid"
    assert "ram_allocation_ratio" in line
    code, line = error_of(nubes("aggregate", "create", "r3", "--zone", "has space"))
    assert code == "nubes.request.invalid"
    assert "availability_zone" in line


def test_zone_list(nubes: Run, cloud: Any) -> None:
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    make_user(cloud, admin, "u1", "p1")
    make_host(cloud, "node-1")
    make_host(cloud, "node-2", up=False)
    ok(nubes("aggregate", "create", "r1", "--zone", "az1"))
    ok(nubes("aggregate", "add-host", "r1", "node-2"))

    zones = data(nubes("zone", "list", "-f", "json"))
    assert [(z["name"], z["available"], z["hosts"]) for z in zones] == [
        ("az1", False, ["node-2"]),
        ("nova", True, ["node-1"]),
    ]
    long = ok(nubes("zone", "list", "--long")).stdout
    assert "node-2" in long
    assert "not available" in long
    short = ok(nubes("zone", "list", env=as_user("u1", "p1"))).stdout
    assert "az1" in short
    assert "node-" not in short
    refused = nubes("zone", "list", "--long", env=as_user("u1", "p1"))
    assert refused.exit_code == 1
    assert "only cloud admins" in refused.stderr


def test_host_set_and_show(nubes: Run, cloud: Any) -> None:
    make_host(cloud, "node-1")
    ok(nubes("aggregate", "create", "dense", "--property", "ram_allocation_ratio=3"))
    ok(nubes("aggregate", "add-host", "dense", "node-1"))
    shown = data(
        nubes("host", "set", "node-1", "--cpu-ratio", "4", "--max-instances", "9", "-f", "json")
    )
    assert (shown["cpu_allocation_ratio"], shown["max_instances"]) == (4.0, 9)
    assert shown["scheduling"]["sources"]["ram_allocation_ratio"] == "aggregate dense"

    table = ok(nubes("host", "show", "node-1")).stdout
    assert re.search(r"CPU allocation ratio\s*│\s*4\.0\s*│\s*host", table), table
    assert re.search(r"RAM allocation ratio\s*│\s*3\.0\s*│\s*aggregate dense", table), table
    assert re.search(r"Max instances\s*│\s*9\s*│\s*host", table), table
    assert re.search(r"Availability zone\s*│\s*nova", table), table

    cleared = data(nubes("host", "set", "node-1", "--clear-ratios", "-f", "json"))
    assert cleared["cpu_allocation_ratio"] is None
    assert cleared["max_instances"] == 9
    cleared = data(nubes("host", "set", "node-1", "--clear-max-instances", "-f", "json"))
    assert cleared["scheduling"]["max_instances"] is None
    assert "no cap" in ok(nubes("host", "set", "node-1", "--disk-ratio", "2")).stdout

    code, line = error_of(nubes("host", "set", "node-1", "--cpu-ratio", "0"))
    assert code == "nubes.request.invalid"
    assert "cpu_allocation_ratio" in line
    code, line = error_of(nubes("host", "set", "node-1", "--ram-ratio", "5000"))
    assert "ram_allocation_ratio" in line
    code, line = error_of(nubes("host", "set", "node-1", "--max-instances", "0"))
    assert "max_instances" in line
    assert nubes("host", "set", "node-1").exit_code == 2
    assert nubes("host", "set", "node-1", "--cpu-ratio", "2", "--clear-ratios").exit_code == 2
    code, _ = error_of(nubes("host", "set", "node-9", "--cpu-ratio", "2"))
    assert code == "nubes.host.not_found"


def test_server_group_commands(nubes: Run, cloud: Any) -> None:
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    make_user(cloud, admin, "u1", "p1")
    make_user(cloud, admin, "r1", "p1", role="reader")
    member, reader = as_user("u1", "p1"), as_user("r1", "p1")

    made = data(
        nubes(
            "server-group", "create", "web", "--policy", "anti-affinity", "-f", "json", env=member
        )
    )
    assert (made["name"], made["policy"]) == ("web", "anti-affinity")
    server = make_instance(cloud, "p1", "web-1")
    with cloud.services.db.transaction() as session:
        ctx = cloud.services.auth.validate(cloud.token("u1", PASSWORD, "p1"))
        cloud.services.server_groups.add_member(session, ctx, "web", server)

    listed = data(nubes("server-group", "list", "-f", "json", env=reader))
    assert [g["name"] for g in listed] == ["web"]
    table = ok(nubes("server-group", "show", "web", env=reader)).stdout
    assert "web-1" in table
    assert server in table
    assert "anti-affinity" in ok(nubes("server-group", "list", env=reader)).stdout
    every = ok(nubes("server-group", "list", "--all-projects")).stdout
    assert "Project" in every

    code, _ = error_of(nubes("server-group", "delete", "web", env=reader))
    assert code == "nubes.policy.forbidden"
    code, _ = error_of(
        nubes("server-group", "create", "web", "--policy", "affinity", "-f", "json", env=member)
    )
    assert code == "nubes.server_group.exists"
    assert nubes("server-group", "create", "x", "--policy", "together", env=member).exit_code == 2
    assert (
        "deleted server group web" in ok(nubes("server-group", "delete", "web", env=member)).stdout
    )
    code, _ = error_of(nubes("server-group", "show", "web", env=member))
    assert code == "nubes.server_group.not_found"


def test_quota_set_knows_the_new_resources(nubes: Run, cloud: Any) -> None:
    make_project(cloud, cloud.admin, "p1")
    changed = data(
        nubes(
            "quota", "set", "p1", "--server-groups", "3", "--server-group-members", "7",
            "-f", "json",
        )
    )  # fmt: skip
    assert (changed["limits"]["server_groups"], changed["limits"]["server_group_members"]) == (3, 7)
