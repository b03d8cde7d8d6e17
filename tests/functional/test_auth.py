"""Tokens: issue by password, token and application credential; validation; revocation that
takes effect on the very next request; key rotation."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from nubes.identity.tokens import TokenPayload
from tests.functional.helpers import PASSWORD, error_of, make_project, make_user


def test_password_token_carries_user_project_roles(cloud):
    r = cloud.client.post(
        "/v1/auth/tokens", json={"username": "admin", "password": cloud.admin_password}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["x-subject-token"] == body["token"]
    assert body["user"]["name"] == "admin"
    assert body["project"]["name"] == "admin"
    assert body["roles"] == ["admin"]
    assert body["is_admin"] is True
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)


def test_wrong_password_and_unknown_user_look_the_same(cloud):
    a = cloud.client.post("/v1/auth/tokens", json={"username": "admin", "password": "nope-nope"})
    b = cloud.client.post("/v1/auth/tokens", json={"username": "ghost", "password": "nope-nope"})
    assert a.status_code == b.status_code == 401
    assert error_of(a)["message"] == error_of(b)["message"]
    assert error_of(a)["code"] == "nubes.auth.invalid_credentials"


def test_no_token_and_garbage_token_are_401(cloud):
    r = cloud.client.get("/v1/flavors")
    assert r.status_code == 401
    assert "X-Auth-Token" in error_of(r)["message"]
    r = cloud.client.get("/v1/flavors", headers={"X-Auth-Token": "garbage"})
    assert r.status_code == 401
    assert error_of(r)["code"] == "nubes.auth.unauthenticated"


def test_bearer_header_works_too(cloud):
    token = cloud.token("admin", cloud.admin_password)
    r = cloud.client.get("/v1/flavors", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


def test_revoked_token_fails_on_next_request(cloud):
    token = cloud.token("admin", cloud.admin_password)
    other = cloud.token("admin", cloud.admin_password)
    assert cloud.client.get("/v1/flavors", headers=cloud.as_(token)).status_code == 200
    r = cloud.client.request(
        "DELETE", "/v1/auth/tokens", headers={**cloud.as_(other), "X-Subject-Token": token}
    )
    assert r.status_code == 204, r.text
    r = cloud.client.get("/v1/flavors", headers=cloud.as_(token))
    assert r.status_code == 401
    assert "revoked" in error_of(r)["message"]
    # only that token: the other one still works
    assert cloud.client.get("/v1/flavors", headers=cloud.as_(other)).status_code == 200


def test_revoking_own_token_without_subject(cloud):
    token = cloud.token("admin", cloud.admin_password)
    assert cloud.client.delete("/v1/auth/tokens", headers=cloud.as_(token)).status_code == 204
    assert cloud.client.get("/v1/flavors", headers=cloud.as_(token)).status_code == 401


def test_revoke_all_tokens_of_a_user(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    t1 = make_user(cloud, admin, "u1", "p1")
    t2 = cloud.as_(cloud.token("u1", PASSWORD))
    assert cloud.client.delete("/v1/users/u1/tokens", headers=admin).status_code == 204
    assert cloud.client.get("/v1/flavors", headers=t1).status_code == 401
    assert cloud.client.get("/v1/flavors", headers=t2).status_code == 401
    # a fresh login works again
    assert (
        cloud.client.get("/v1/flavors", headers=cloud.as_(cloud.token("u1", PASSWORD))).status_code
        == 200
    )


def test_disabling_user_or_project_kills_tokens_at_once(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    make_project(cloud, admin, "p2")
    u1 = make_user(cloud, admin, "u1", "p1")
    u2 = make_user(cloud, admin, "u2", "p2")
    cloud.client.patch("/v1/users/u1", json={"enabled": False}, headers=admin)
    assert cloud.client.get("/v1/flavors", headers=u1).status_code == 401
    r = cloud.client.post("/v1/auth/tokens", json={"username": "u1", "password": PASSWORD})
    assert error_of(r)["code"] == "nubes.auth.disabled"
    cloud.client.patch("/v1/projects/p2", json={"enabled": False}, headers=admin)
    assert cloud.client.get("/v1/flavors", headers=u2).status_code == 401
    # re-enabling does not resurrect the old tokens
    cloud.client.patch("/v1/users/u1", json={"enabled": True}, headers=admin)
    assert cloud.client.get("/v1/flavors", headers=u1).status_code == 401


def test_removed_role_takes_effect_on_next_request(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    r = cloud.client.delete("/v1/projects/p1/users/u1/roles/member", headers=admin)
    assert r.status_code == 204, r.text
    assert cloud.client.get("/v1/flavors", headers=u1).status_code == 401


def test_password_change_revokes_tokens(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    r = cloud.client.post(
        "/v1/users/u1/password",
        json={"original_password": "wrong-wrong", "password": "new-password-1"},
        headers=u1,
    )
    assert r.status_code == 401
    r = cloud.client.post(
        "/v1/users/u1/password",
        json={"original_password": PASSWORD, "password": "new-password-1"},
        headers=u1,
    )
    assert r.status_code == 204, r.text
    assert cloud.client.get("/v1/flavors", headers=u1).status_code == 401
    cloud.token("u1", "new-password-1")


def test_token_rescope_to_another_project(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    make_project(cloud, admin, "p2")
    make_user(cloud, admin, "u1", "p1")
    cloud.client.put("/v1/projects/p2/users/u1/roles/reader", headers=admin)
    token = cloud.token("u1", PASSWORD)
    r = cloud.client.post("/v1/auth/tokens", json={"token": token, "project": "p2"})
    assert r.status_code == 201, r.text
    assert r.json()["project"]["name"] == "p2"
    assert r.json()["roles"] == ["reader"]
    assert "token" in r.json()["methods"]
    r = cloud.client.post("/v1/auth/tokens", json={"token": token, "project": "admin"})
    assert r.status_code == 401
    assert error_of(r)["code"] == "nubes.auth.no_role"


def test_ambiguous_auth_request_is_400(cloud):
    r = cloud.client.post(
        "/v1/auth/tokens", json={"username": "admin", "password": "x", "token": "y"}
    )
    assert r.status_code == 400
    r = cloud.client.post("/v1/auth/tokens", json={})
    assert r.status_code == 400


def test_validate_other_token(cloud):
    admin = cloud.admin
    token = cloud.token("admin", cloud.admin_password)
    r = cloud.client.get("/v1/auth/tokens", headers={**admin, "X-Subject-Token": token})
    assert r.status_code == 200
    assert r.json()["user"]["name"] == "admin"


def test_expired_token_is_refused(cloud):
    ctx = cloud.services.auth.validate(cloud.token("admin", cloud.admin_password))
    past = TokenPayload(
        user_id=ctx.user_id,
        project_id=ctx.project_id,
        audit_id="a" * 32,
        issued_at=time.time() - 7200,
        expires_at=time.time() - 3600,
        methods=("password",),
    )
    token = cloud.services.core.codec.encrypt(past)
    r = cloud.client.get("/v1/flavors", headers=cloud.as_(token))
    assert r.status_code == 401
    assert "expired" in error_of(r)["message"]


def test_tampered_token_is_refused(cloud):
    token = cloud.token("admin", cloud.admin_password)
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    assert cloud.client.get("/v1/flavors", headers=cloud.as_(tampered)).status_code == 401


def test_key_rotation_keeps_recent_tokens_and_retires_old_keys(cloud):
    admin = cloud.admin
    old = cloud.token("admin", cloud.admin_password)
    r = cloud.client.post("/v1/auth/keys/rotate", headers=admin)
    assert r.status_code == 200, r.text
    assert cloud.client.get("/v1/flavors", headers=cloud.as_(old)).status_code == 200
    # max_active_keys = 3: after two more rotations the key that signed `old` is gone
    for _ in range(2):
        cloud.client.post("/v1/auth/keys/rotate", headers=admin)
    assert cloud.client.get("/v1/flavors", headers=cloud.as_(old)).status_code == 401
    assert cloud.client.get("/v1/flavors", headers=cloud.admin).status_code == 200


def test_a_token_is_opened_once_per_load_of_the_keys(cloud, monkeypatch):
    """The same token comes with every request: it is decrypted once while the keys stay
    as loaded. Expiry and revocation are still checked each time, and a reload of the keys
    (a rotation retiring the key that signed it) opens it again."""
    from cryptography.fernet import MultiFernet

    opened: list[bytes] = []
    decrypt = MultiFernet.decrypt

    def counted(self: MultiFernet, token: bytes, ttl: int | None = None) -> bytes:
        opened.append(token)
        return decrypt(self, token, ttl)

    monkeypatch.setattr(MultiFernet, "decrypt", counted)
    user = make_user(cloud, cloud.admin, "u1", "admin")
    opened.clear()
    for _ in range(3):
        assert cloud.client.get("/v1/flavors", headers=user).status_code == 200
    assert len(opened) == 1
    r = cloud.client.delete("/v1/users/u1/tokens", headers=cloud.admin)
    assert r.status_code == 204, r.text
    assert cloud.client.get("/v1/flavors", headers=user).status_code == 401  # revoked
    admin = cloud.token("admin", cloud.admin_password)
    assert cloud.client.get("/v1/flavors", headers=cloud.as_(admin)).status_code == 200
    opened.clear()
    for _ in range(3):  # max_active_keys = 3: the third rotation retires admin's key
        cloud.client.post("/v1/auth/keys/rotate", headers=cloud.admin)
    assert cloud.client.get("/v1/flavors", headers=cloud.as_(admin)).status_code == 401
    assert opened  # opened again (and refused) after the keys were loaded anew


def test_application_credential_lifecycle(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    r = cloud.client.post(
        "/v1/users/me/application-credentials",
        json={"name": "ci", "roles": ["reader"]},
        headers=u1,
    )
    assert r.status_code == 201, r.text
    cred = r.json()
    r = cloud.client.post(
        "/v1/auth/tokens",
        json={
            "application_credential_id": cred["id"],
            "application_credential_secret": cred["secret"],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["roles"] == ["reader"]
    app_token = cloud.as_(r.json()["token"])
    assert (
        cloud.client.post("/v1/keypairs", json={"name": "k"}, headers=app_token).status_code == 403
    )
    listed = cloud.client.get("/v1/users/me/application-credentials", headers=u1).json()
    assert [c["name"] for c in listed["application_credentials"]] == ["ci"]
    assert "secret" not in listed["application_credentials"][0]
    # revoking the credential kills the tokens it issued, on the next request
    assert (
        cloud.client.delete(
            f"/v1/users/me/application-credentials/{cred['id']}", headers=u1
        ).status_code
        == 204
    )
    assert cloud.client.get("/v1/flavors", headers=app_token).status_code == 401
    r = cloud.client.post(
        "/v1/auth/tokens",
        json={
            "application_credential_id": cred["id"],
            "application_credential_secret": cred["secret"],
        },
    )
    assert r.status_code == 401


def test_application_credential_cannot_escalate_or_be_in_the_past(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    r1 = make_user(cloud, admin, "r1", "p1", role="reader")
    r = cloud.client.post(
        "/v1/users/me/application-credentials", json={"name": "x", "roles": ["member"]}, headers=r1
    )
    assert r.status_code in (400, 403)
    make_user(cloud, admin, "u1", "p1")
    u1 = cloud.as_(cloud.token("u1", PASSWORD))
    r = cloud.client.post(
        "/v1/users/me/application-credentials",
        json={"name": "old", "expires_at": "2001-01-01T00:00:00Z"},
        headers=u1,
    )
    assert r.status_code == 400
    assert "expires_at" in error_of(r)["message"]


def test_ec2_credentials(cloud):
    admin = cloud.admin
    make_project(cloud, admin, "p1")
    u1 = make_user(cloud, admin, "u1", "p1")
    r = cloud.client.post("/v1/users/me/ec2-credentials", json={}, headers=u1)
    assert r.status_code == 201, r.text
    cred = r.json()
    assert len(cred["secret"]) == 40
    assert cloud.services.credentials.lookup_ec2(cred["access"]).secret == cred["secret"]
    listed = cloud.client.get("/v1/users/me/ec2-credentials", headers=u1).json()["ec2_credentials"]
    assert [c["access"] for c in listed] == [cred["access"]]
    # stored encrypted, never in clear
    from sqlalchemy import text

    with cloud.services.db.read() as s:
        stored = s.execute(text("SELECT secret_encrypted FROM ec2_credentials")).scalar_one()
    assert cred["secret"] not in stored
    r = cloud.client.delete(f"/v1/users/me/ec2-credentials/{cred['access']}", headers=u1)
    assert r.status_code == 204
