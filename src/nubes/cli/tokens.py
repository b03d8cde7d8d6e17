"""``nubes token`` and ``nubes credential``: tokens (issue, inspect, revoke, rotate keys) and
EC2 / application credentials. Secrets the API shows once are printed once, with a warning."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from nubes.cli.client import api, path
from nubes.cli.identity import RoleName
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say, warn

token_app = typer.Typer(
    help="Tokens: issue, inspect, revoke; rotate the keys.", no_args_is_help=True
)
credential_app = typer.Typer(help="EC2 and application credentials.", no_args_is_help=True)
ec2_app = typer.Typer(help="EC2 access/secret pairs.", no_args_is_help=True)
app_cred_app = typer.Typer(
    help="Application credentials (secrets shown once).", no_args_is_help=True
)
credential_app.add_typer(ec2_app, name="ec2")
credential_app.add_typer(app_cred_app, name="app")


# tokens ----------------------------------------------------------------------------------------

TOKEN_FIELDS: list[Column] = [
    ("expires_at", "Expires"),
    ("user.name", "User"),
    ("project.name", "Project"),
    ("roles", "Roles"),
    ("is_admin", "Cloud admin"),
    ("user.id", "User id"),
    ("project.id", "Project id"),
    ("methods", "Methods"),
    ("audit_id", "Audit id"),
]


@token_app.command("issue")
def token_issue(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option(help="Scope the new token to this project.")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Issue a token (for scripts: NUBES_TOKEN=$(nubes token issue -f json | jq -r .token))."""
    client = api(ctx)
    issued = client.issued
    if issued is None or project is not None:
        body: dict[str, Any] = {"token": client.token}
        if project:
            body["project"] = project
        issued = client.post(path("auth", "tokens"), json=body)
    assert issued is not None
    render_one(issued, fmt, TOKEN_FIELDS)
    if fmt is Format.table:  # on a line of its own, so that it copies whole
        typer.echo(f"export NUBES_TOKEN={issued['token']}")


@token_app.command("show")
def token_show(
    ctx: typer.Context,
    token: Annotated[str | None, typer.Argument(help="Token to check (default: yours).")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Validate a token and show whom it speaks for."""
    headers = {"X-Subject-Token": token} if token else None
    render_one(api(ctx).get(path("auth", "tokens"), headers=headers), fmt, TOKEN_FIELDS)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context, token: Annotated[str, typer.Argument(help="The token to revoke.")]
) -> None:
    """Revoke a token (your own; cloud admins: anyone's)."""
    api(ctx).delete(path("auth", "tokens"), headers={"X-Subject-Token": token})
    say("revoked the token")


@token_app.command("revoke-user")
def token_revoke_user(
    ctx: typer.Context, user: Annotated[str, typer.Argument(help="User id or name.")]
) -> None:
    """Revoke every token a user holds now."""
    api(ctx).delete(path("users", user, "tokens"))
    say(f"revoked every token of user {user}")


@token_app.command("rotate-keys")
def token_rotate_keys(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """Rotate the token keys (cloud admins); tokens issued before stay valid."""
    rotated = api(ctx).post(path("auth", "keys", "rotate"))
    if fmt is Format.json:
        render_one(rotated, fmt)
    else:
        say(f"rotated the token keys; the primary key is now #{rotated['primary_serial']}")


# credentials -----------------------------------------------------------------------------------

CredentialUser = Annotated[
    str, typer.Option("--user", help="Whose (cloud admins: another user's); default: yours.")
]
EC2_COLUMNS: list[Column] = [
    ("access", "Access"),
    ("secret", "Secret"),
    ("project_id", "Project"),
    ("user_id", "User"),
    ("created_at", "Created"),
]
APP_COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("project_id", "Project"),
    ("roles", "Roles"),
    ("expires_at", "Expires"),
    ("description", "Description"),
]


@ec2_app.command("create")
def ec2_create(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option(help="Project it acts on (default: the token's).")
    ] = None,
    user: CredentialUser = "me",
    fmt: FormatOption = Format.table,
) -> None:
    """Create an EC2 access/secret pair."""
    body = {"project": project} if project else {}
    made = api(ctx).post(path("users", user, "ec2-credentials"), json=body)
    render_one(made, fmt, EC2_COLUMNS)


@ec2_app.command("list")
def ec2_list(
    ctx: typer.Context, user: CredentialUser = "me", fmt: FormatOption = Format.table
) -> None:
    """List EC2 credentials."""
    rows = api(ctx).get(path("users", user, "ec2-credentials"))["ec2_credentials"]
    render_list(rows, EC2_COLUMNS, fmt)


@ec2_app.command("delete")
def ec2_delete(
    ctx: typer.Context,
    access: Annotated[list[str], typer.Argument(help="Access keys.")],
    user: CredentialUser = "me",
) -> None:
    """Delete EC2 credentials."""
    client = api(ctx)
    for key in access:
        client.delete(path("users", user, "ec2-credentials", key))
        say(f"deleted EC2 credential {key}")


def _iso(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (2030-01-31 or 2030-01-31T12:00:00+00:00)",
            param_hint="--expires",
        ) from None


@app_cred_app.command("create")
def app_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Credential name.")],
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    expires: Annotated[
        str | None, typer.Option(help="Expiry, ISO 8601 (UTC unless it says); default: never.")
    ] = None,
    role: Annotated[
        list[RoleName] | None,
        typer.Option(help="Delegate this role (repeat); default: every role of your token."),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create an application credential for the token's project; the secret is shown once."""
    body: dict[str, Any] = {"name": name, "description": description}
    if expires is not None:
        body["expires_at"] = _iso(expires)
    if role:
        body["roles"] = [r.value for r in role]
    made = api(ctx).post(path("users", "me", "application-credentials"), json=body)
    render_one(made, fmt, [*APP_COLUMNS, ("secret", "Secret")])
    warn("the secret is shown once: it cannot be read again, so store it now")


@app_cred_app.command("list")
def app_list(
    ctx: typer.Context, user: CredentialUser = "me", fmt: FormatOption = Format.table
) -> None:
    """List application credentials (without secrets)."""
    rows = api(ctx).get(path("users", user, "application-credentials"))
    render_list(rows["application_credentials"], APP_COLUMNS, fmt)


@app_cred_app.command("delete")
def app_delete(
    ctx: typer.Context,
    credentials: Annotated[list[str], typer.Argument(help="Credential ids or names.")],
    user: CredentialUser = "me",
) -> None:
    """Delete application credentials; tokens issued from them stop working."""
    client = api(ctx)
    for credential in credentials:
        client.delete(path("users", user, "application-credentials", credential))
        say(f"deleted application credential {credential}")
