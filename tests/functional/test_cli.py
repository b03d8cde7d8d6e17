"""The `nubes` CLI against the in-process API: every command group, JSON output, error lines,
exit codes, and where credentials come from."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import Result

from nubes.cli import client as cli_client
from tests.functional.cli_harness import Run, admin_runner, data, ok

ERROR_LINE = re.compile(r"^error: .+ \((nubes\.[a-z_.]+), request req-[0-9a-f-]+\)$")
PASSWORD = "secret-pass-1"


@pytest.fixture
def nubes(cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    return admin_runner(cloud, monkeypatch, tmp_path)


def error_code(result: Result) -> str:
    """The code of the one `error: …` line; the command must have failed with exit 1."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    match = ERROR_LINE.match(lines[0])
    assert match, lines[0]
    assert "Traceback" not in result.output
    return match.group(1)


def as_user(
    name: str, project: str | None = None, password: str = PASSWORD
) -> dict[str, str | None]:
    return {"NUBES_USERNAME": name, "NUBES_PASSWORD": password, "NUBES_PROJECT": project}


# projects and users ------------------------------------------------------------------------------


def test_project_create_list_show_set_delete(nubes: Run) -> None:
    made = data(nubes("project", "create", "p1", "--description", "first [bold]", "-f", "json"))
    assert made["name"] == "p1"
    assert made["description"] == "first [bold]"

    listed = data(nubes("project", "list", "-f", "json"))
    assert isinstance(listed, list)
    assert {"admin", "p1"} <= {p["name"] for p in listed}

    assert data(nubes("project", "show", made["id"], "-f", "json"))["name"] == "p1"
    table = ok(nubes("project", "show", "p1")).stdout
    assert "first [bold]" in table  # user text is never read as rich markup

    changed = data(nubes("project", "set", "p1", "--name", "p2", "--disable", "-f", "json"))
    assert changed["name"] == "p2"
    assert changed["enabled"] is False

    assert "deleted project p2" in ok(nubes("project", "delete", "p2")).stdout
    assert error_code(nubes("project", "show", "p2")) == "nubes.project.not_found"


def test_user_create_list_show_set_delete(nubes: Run) -> None:
    ok(nubes("project", "create", "p1"))
    made = data(
        nubes(
            "user", "create", "u1", "--password", PASSWORD, "--email", "u1@example.org",
            "--project", "p1", "--role", "member", "-f", "json",
        )
    )  # fmt: skip
    assert made["status"] == "enabled"
    assert made["email"] == "u1@example.org"

    assert [u["name"] for u in data(nubes("user", "list", "--project", "p1", "-f", "json"))] == [
        "u1"
    ]
    assert data(nubes("user", "list", "--name", "u1", "-f", "json"))[0]["id"] == made["id"]
    assert "u1@example.org" in ok(nubes("user", "list")).stdout

    changed = data(
        nubes("user", "set", "u1", "--email", "new@example.org", "--disable", "-f", "json")
    )
    assert changed["email"] == "new@example.org"
    assert changed["enabled"] is False
    assert data(nubes("user", "set", made["id"], "--enable", "-f", "json"))["enabled"] is True

    assert data(nubes("user", "show", "u1", "-f", "json"))["email"] == "new@example.org"
    assert "deleted user u1" in ok(nubes("user", "delete", "u1")).stdout
    assert error_code(nubes("user", "show", "u1")) == "nubes.user.not_found"


def test_user_changes_own_password_at_the_prompts(nubes: Run) -> None:
    ok(nubes("project", "create", "p1"))
    ok(nubes("user", "create", "u1", "--password", PASSWORD, "--project", "p1"))
    result = nubes(
        "user", "password", input=f"{PASSWORD}\nnew-pass-22\nnew-pass-22\n", env=as_user("u1")
    )
    assert "changed the password of u1" in ok(result).stdout
    assert (
        data(nubes("token", "show", "-f", "json", env=as_user("u1", password="new-pass-22")))[
            "user"
        ]["name"]
        == "u1"
    )
    assert error_code(nubes("token", "show", env=as_user("u1"))) == "nubes.auth.invalid_credentials"


def test_user_create_prompts_for_a_missing_password(nubes: Run) -> None:
    made = nubes("user", "create", "u1", "-f", "json", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert '"name": "u1"' in ok(made).stdout


def test_bad_request_is_one_error_line_and_exit_1(nubes: Run) -> None:
    result = nubes("user", "create", "bad name", "--password", PASSWORD)
    assert error_code(result) == "nubes.request.invalid"
    assert "invalid name 'bad name'" in result.stderr
    assert error_code(nubes("user", "create", "u1", "--password", "short")) == (
        "nubes.request.invalid"
    )


def test_usage_errors_exit_2(nubes: Run) -> None:
    assert nubes("user", "set", "admin").exit_code == 2  # nothing to change
    assert nubes("quota", "set", "admin").exit_code == 2
    assert nubes("flavor", "create", "f1", "--vcpus", "1").exit_code == 2  # --ram, --disk
    assert nubes("role", "add", "emperor", "--user", "admin", "--project", "admin").exit_code == 2
    assert nubes("nonsense").exit_code == 2


# roles, tokens, credentials ----------------------------------------------------------------------


def test_roles(nubes: Run) -> None:
    roles = {r["name"]: r["implies"] for r in data(nubes("role", "list", "-f", "json"))}
    assert roles["admin"] == ["reader", "member"]

    ok(nubes("project", "create", "p1"))
    ok(nubes("user", "create", "u1", "--password", PASSWORD))
    assert (
        "granted reader"
        in ok(nubes("role", "add", "reader", "--user", "u1", "--project", "p1")).stdout
    )
    rows = data(nubes("role", "assignments", "--user", "u1", "-f", "json"))
    assert [r["role"] for r in rows] == ["reader"]
    table = ok(nubes("role", "assignments", "--project", "p1")).stdout
    assert "u1" in table
    assert "p1" in table

    ok(nubes("role", "remove", "reader", "--user", "u1", "--project", "p1"))
    assert data(nubes("role", "assignments", "--user", "u1", "-f", "json")) == []
    again = nubes("role", "remove", "reader", "--user", "u1", "--project", "p1")
    assert error_code(again) == "nubes.role.not_found"


def test_token_issue_show_revoke(nubes: Run) -> None:
    issued = data(nubes("token", "issue", "-f", "json"))
    assert issued["user"]["name"] == "admin"
    assert issued["roles"] == ["admin"]
    token = issued["token"]
    assert re.search(r"^export NUBES_TOKEN=\S+$", ok(nubes("token", "issue")).stdout, re.M)

    mine = {"NUBES_TOKEN": token}
    assert data(nubes("token", "show", "-f", "json", env=mine))["audit_id"] == issued["audit_id"]
    assert data(nubes("token", "show", token, "-f", "json"))["audit_id"] == issued["audit_id"]

    assert "revoked" in ok(nubes("token", "revoke", token)).stdout
    assert error_code(nubes("token", "show", env=mine)) == "nubes.auth.unauthenticated"
    assert error_code(nubes("--token", token, "user", "list")) == "nubes.auth.unauthenticated"


def test_token_revoke_user_and_rotate_keys(nubes: Run) -> None:
    ok(nubes("project", "create", "p1"))
    ok(nubes("user", "create", "u1", "--password", PASSWORD, "--project", "p1"))
    token = data(nubes("token", "issue", "-f", "json", env=as_user("u1")))["token"]
    ok(nubes("token", "revoke-user", "u1"))
    assert error_code(nubes("token", "show", env={"NUBES_TOKEN": token})) == (
        "nubes.auth.unauthenticated"
    )
    serial = data(nubes("token", "rotate-keys", "-f", "json"))["primary_serial"]
    assert "rotated the token keys" in ok(nubes("token", "rotate-keys")).stdout
    assert isinstance(serial, int)


def test_token_issue_rescoped_to_another_project(nubes: Run) -> None:
    ok(nubes("project", "create", "p1"))
    ok(nubes("role", "add", "member", "--user", "admin", "--project", "p1"))
    issued = data(nubes("token", "issue", "--project", "p1", "-f", "json"))
    assert issued["project"]["name"] == "p1"
    assert issued["methods"][-1] == "token"


def test_ec2_and_application_credentials(nubes: Run) -> None:
    made = data(nubes("credential", "ec2", "create", "-f", "json"))
    assert made["secret"]
    listed = data(nubes("credential", "ec2", "list", "-f", "json"))
    assert [c["access"] for c in listed] == [made["access"]]
    ok(nubes("credential", "ec2", "delete", made["access"]))
    assert data(nubes("credential", "ec2", "list", "-f", "json")) == []

    result = ok(
        nubes(
            "credential", "app", "create", "ci", "--expires", "2099-01-01T00:00:00+00:00",
            "--role", "reader", "-f", "json",
        )
    )  # fmt: skip
    created = json.loads(result.stdout)
    assert created["secret"]
    assert created["roles"] == "reader"
    assert "shown once" in result.stderr
    listed = data(nubes("credential", "app", "list", "-f", "json"))
    assert [c["name"] for c in listed] == ["ci"]
    assert "secret" not in listed[0]
    ok(nubes("credential", "app", "delete", "ci"))
    assert error_code(nubes("credential", "app", "delete", "ci")) == "nubes.credential.not_found"
    assert nubes("credential", "app", "create", "x", "--expires", "soon").exit_code == 2


# quotas, flavors, keypairs -----------------------------------------------------------------------


def test_quota_set_show_defaults(nubes: Run) -> None:
    ok(nubes("project", "create", "p1"))
    changed = data(
        nubes(
            "quota", "set", "p1", "--instances", "3", "--floating-ips", "-1", "--key-pairs", "7",
            "-f", "json",
        )
    )  # fmt: skip
    assert changed["limits"]["instances"] == 3
    assert changed["limits"]["floating_ips"] == -1
    assert changed["limits"]["key_pairs"] == 7

    shown = data(nubes("quota", "show", "p1", "-f", "json"))
    assert shown["project_name"] == "p1"
    assert shown["limits"] == changed["limits"]
    table = ok(nubes("quota", "show", "p1")).stdout
    assert re.search(r"floating_ips\s+│\s+unlimited", table)

    mine = data(nubes("quota", "show", "-f", "json"))  # the token's project
    assert mine["project_name"] == "admin"
    defaults = data(nubes("quota", "defaults", "-f", "json"))
    assert defaults["instances"] == 10
    assert "key_pairs" in defaults
    assert error_code(nubes("quota", "show", "nope")) == "nubes.project.not_found"


def test_lists_follow_next_marker(nubes: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_client, "PAGE_SIZE", 2)
    names = [f["name"] for f in data(nubes("flavor", "list", "-f", "json"))]
    assert names == ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"]


def test_flavor_create_list_show_set_access_delete(nubes: Run) -> None:
    ok(nubes("project", "create", "p1"))
    ok(nubes("project", "create", "p2"))
    made = data(
        nubes(
            "flavor", "create", "f.small", "--vcpus", "2", "--ram", "2048", "--disk", "20",
            "--swap", "512", "--private", "--project", "p1", "--property", "hw:cpu_policy=shared",
            "--id", "fs-1", "--description", "test", "-f", "json",
        )
    )  # fmt: skip
    assert made["id"] == "fs-1"
    assert made["is_public"] is False
    assert made["swap_mb"] == 512
    assert made["extra_specs"] == {"hw:cpu_policy": "shared"}

    private = data(nubes("flavor", "list", "--private", "-f", "json"))
    assert [f["name"] for f in private] == ["f.small"]
    public = data(nubes("flavor", "list", "--public", "-f", "json"))
    assert "m1.tiny" in {f["name"] for f in public}
    assert "f.small" not in {f["name"] for f in public}
    assert data(nubes("flavor", "show", "fs-1", "-f", "json"))["name"] == "f.small"

    changed = data(
        nubes(
            "flavor", "set", "f.small", "--name", "f.smaller", "--property", "a=b",
            "--unset-property", "hw:cpu_policy", "-f", "json",
        )
    )  # fmt: skip
    assert changed["name"] == "f.smaller"
    assert changed["extra_specs"] == {"a": "b"}

    p1 = data(nubes("project", "show", "p1", "-f", "json"))["id"]
    p2 = data(nubes("project", "show", "p2", "-f", "json"))["id"]
    assert data(nubes("flavor", "access", "list", "fs-1", "-f", "json"))["projects"] == [p1]
    added = data(nubes("flavor", "access", "add", "fs-1", "p2", "-f", "json"))
    assert sorted(added["projects"]) == sorted([p1, p2])
    assert "p2" in ok(nubes("flavor", "access", "list", "fs-1")).stdout
    removed = data(nubes("flavor", "access", "remove", "fs-1", "p1", "-f", "json"))
    assert removed["projects"] == [p2]
    assert error_code(nubes("flavor", "access", "add", "m1.tiny", "p1")) == (
        "nubes.flavor.access_public"
    )

    assert nubes("flavor", "create", "f.x", "--vcpus", "1", "--ram", "1", "--disk", "1",
                 "--project", "p1").exit_code == 2  # fmt: skip
    assert nubes("flavor", "set", "fs-1", "--property", "novalue").exit_code == 2
    ok(nubes("flavor", "delete", "f.smaller"))
    assert error_code(nubes("flavor", "show", "fs-1")) == "nubes.flavor.not_found"


def test_keypair_generated_to_a_0600_file(nubes: Run, tmp_path: Path) -> None:
    key_file = tmp_path / "k1.pem"
    result = ok(nubes("keypair", "create", "k1", "--private-key-file", str(key_file), "-f", "json"))
    made = json.loads(result.stdout)
    assert "private_key" not in made  # on disk, not in the pipe
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")

    again = nubes("keypair", "create", "k9", "--private-key-file", str(key_file))
    assert again.exit_code == 1
    assert "exists" in again.stderr
    assert "k9" not in {k["name"] for k in data(nubes("keypair", "list", "-f", "json"))}


def test_keypair_generated_is_printed_once_with_a_warning(nubes: Run) -> None:
    result = ok(nubes("keypair", "create", "k1", "--type", "ecdsa-sha2-nistp256"))
    assert "-----BEGIN OPENSSH PRIVATE KEY-----" in result.stdout
    assert "cannot be shown again" in result.stderr
    made = data(nubes("keypair", "create", "k2", "-f", "json"))
    assert made["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_keypair_import_list_show_delete(nubes: Run, tmp_path: Path) -> None:
    generated = data(nubes("keypair", "create", "gen", "-f", "json"))
    public = tmp_path / "id.pub"
    public.write_text(generated["public_key"] + "\n")
    made = data(nubes("keypair", "create", "imported", "--public-key", str(public), "-f", "json"))
    assert made["fingerprint"] == generated["fingerprint"]
    assert made["private_key"] is None

    names = [k["name"] for k in data(nubes("keypair", "list", "-f", "json"))]
    assert names == ["gen", "imported"]
    assert data(nubes("keypair", "show", "imported", "-f", "json"))["id"] == made["id"]
    ok(nubes("keypair", "delete", "gen", "imported"))
    assert error_code(nubes("keypair", "show", "gen")) == "nubes.keypair.not_found"
    missing = nubes("keypair", "create", "k", "--public-key", str(tmp_path / "absent.pub"))
    assert missing.exit_code == 1
    assert "cannot read the public key" in missing.stderr


# where credentials come from ---------------------------------------------------------------------

NO_ENV_CREDENTIALS: dict[str, str | None] = {
    "NUBES_URL": None,
    "NUBES_USERNAME": None,
    "NUBES_PASSWORD": None,
    "NUBES_PROJECT": None,
}


def test_login_file_is_used_then_revoked_by_logout(nubes: Run, cloud: Any, tmp_path: Path) -> None:
    result = nubes(
        "login", "http://nubes.test/", "--username", "admin", "--project", "admin",
        input=f"{cloud.admin_password}\n", env=NO_ENV_CREDENTIALS,
    )  # fmt: skip
    assert "logged in to http://nubes.test as admin" in ok(result).stdout
    session = tmp_path / "config" / "nubes" / "session.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    stored = json.loads(session.read_text())
    assert stored["url"] == "http://nubes.test"
    assert stored["user"] == "admin"
    assert stored["project"] == "admin"
    assert stored["token"]
    assert stored["expires_at"]

    shown = data(nubes("token", "show", "-f", "json", env=NO_ENV_CREDENTIALS))
    assert shown["user"]["name"] == "admin"
    assert shown["methods"] == ["password"]

    assert "logged out" in ok(nubes("logout", env=NO_ENV_CREDENTIALS)).stdout
    assert not session.exists()
    revoked = nubes("token", "show", env={"NUBES_TOKEN": stored["token"]})
    assert error_code(revoked) == "nubes.auth.unauthenticated"
    assert "not logged in" in ok(nubes("logout")).stdout


def test_expired_login_is_reported(nubes: Run, tmp_path: Path) -> None:
    session = tmp_path / "config" / "nubes" / "session.json"
    session.parent.mkdir(parents=True)
    session.write_text(
        json.dumps(
            {
                "url": "http://nubes.test",
                "token": "gAAAAAexpired",
                "expires_at": "2020-01-02T03:04:05Z",
                "user": "admin",
                "project": "admin",
            }
        )
    )
    result = nubes("project", "list", env=NO_ENV_CREDENTIALS)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: your login expired at 2020-01-02 03:04:05 UTC; run nubes login"
    )
    # Credentials in the environment come first.
    ok(nubes("project", "list"))


def test_admin_openrc_of_the_local_cloud_is_the_last_resort(nubes: Run, cloud: Any) -> None:
    state_dir = cloud.services.settings.state_dir
    assert (state_dir / "admin-openrc.sh").exists()
    env = {**NO_ENV_CREDENTIALS, "NUBES_STATE_DIR": str(state_dir)}
    assert data(nubes("token", "show", "-f", "json", env=env))["user"]["name"] == "admin"


def test_no_credentials_says_where_to_get_them(nubes: Run) -> None:
    result = nubes("project", "list", env=NO_ENV_CREDENTIALS)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: no credentials: run `nubes login URL`, set NUBES_URL/NUBES_USERNAME/"
        "NUBES_PASSWORD/NUBES_PROJECT, or run on the head node (nubes up)"
    )


def test_wrong_password_names_the_credential_source(nubes: Run) -> None:
    result = nubes("project", "list", env={"NUBES_PASSWORD": "wrong-password"})
    assert error_code(result) == "nubes.auth.invalid_credentials"
    assert "NUBES_USERNAME/NUBES_PASSWORD" in result.stderr


def test_unreachable_controller_is_one_line(nubes: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_client, "make_http", lambda base_url: httpx.Client(base_url=base_url))
    result = nubes("--url", "http://127.0.0.1:1", "project", "list")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: cannot reach the controller at http://127.0.0.1:1: is it running? (nubes status)"
    )


def test_status_without_a_running_controller_exits_1(nubes: Run, cloud: Any) -> None:
    state_dir = cloud.services.settings.state_dir
    result = nubes("status", "--state-dir", str(state_dir), env=NO_ENV_CREDENTIALS)
    assert result.exit_code == 1
    assert f"no controller running in {state_dir}" in " ".join(result.stdout.split())
    report = json.loads(
        nubes("status", "--state-dir", str(state_dir), "-f", "json", env=NO_ENV_CREDENTIALS).stdout
    )
    assert report["ok"] is False
    assert report["local"]["pid"] is None


def test_version(nubes: Run) -> None:
    assert ok(nubes("--version")).stdout.startswith("nubes ")
    assert os.environ["NUBES_USERNAME"] == "admin"  # the fixture's env stays in place
