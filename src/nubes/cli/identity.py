"""Identity commands: ``nubes user``, ``project`` and ``role`` (tokens and credentials are in
:mod:`nubes.cli.tokens`).

Users, projects and flavors are named by id or name alike: the API accepts both, so the CLI
passes what it is given. Secrets the API shows once (application credential secrets) are
printed once, with a warning.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from nubes.cli.client import ApiClient, api, path
from nubes.cli.errors import ApiError
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say

user_app = typer.Typer(help="Users: create, list, show, change, delete.", no_args_is_help=True)
project_app = typer.Typer(help="Projects (tenants).", no_args_is_help=True)
role_app = typer.Typer(help="Roles and who holds them on which project.", no_args_is_help=True)


class RoleName(StrEnum):
    admin = "admin"
    member = "member"
    reader = "reader"


def nothing_to_change() -> typer.BadParameter:
    return typer.BadParameter("nothing to change: give at least one option (see --help)")


EnableOption = Annotated[
    bool | None, typer.Option("--enable/--disable", help="Enable or disable.", show_default=False)
]

# users -----------------------------------------------------------------------------------------

USER_COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("email", "Email"),
    ("status", "Status"),
    ("default_project_id", "Default project"),
]
USER_FIELDS: list[Column] = [
    *USER_COLUMNS,
    ("created_at", "Created"),
    ("updated_at", "Updated"),
    ("password_changed_at", "Password changed"),
]


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Password."),
    ],
    email: Annotated[str, typer.Option(help="E-mail address.")] = "",
    project: Annotated[
        str | None, typer.Option(help="Default project; the user gets --role on it.")
    ] = None,
    role: Annotated[RoleName | None, typer.Option(help="Role on --project (member).")] = None,
    disable: Annotated[bool, typer.Option("--disable", help="Create it disabled.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a user."""
    body: dict[str, Any] = {"name": name, "password": password, "email": email}
    body["enabled"] = not disable
    if project:
        body["project"] = project
    if role:
        body["role"] = role.value
    render_one(api(ctx).post(path("users"), json=body), fmt, USER_FIELDS)


@user_app.command("list")
def user_list(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only users with a role here.")] = None,
    name: Annotated[str | None, typer.Option(help="Only the user with this name.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List users (cloud admins)."""
    users = api(ctx).list_all(path("users"), "users", {"project": project, "name": name})
    render_list(users, USER_COLUMNS, fmt)


@user_app.command("show")
def user_show(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="User id or name.")],
    fmt: FormatOption = Format.table,
) -> None:
    """Show a user."""
    render_one(api(ctx).get(path("users", user)), fmt, USER_FIELDS)


@user_app.command("set")
def user_set(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="User id or name.")],
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    password: Annotated[
        str | None, typer.Option(help="New password (revokes the user's tokens).")
    ] = None,
    email: Annotated[str | None, typer.Option(help="New e-mail address.")] = None,
    enable: EnableOption = None,
    default_project: Annotated[str | None, typer.Option(help="New default project.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Change a user (cloud admins)."""
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("name", name),
            ("password", password),
            ("email", email),
            ("enabled", enable),
            ("default_project", default_project),
        )
        if value is not None
    }
    if not changes:
        raise nothing_to_change()
    render_one(api(ctx).patch(path("users", user), json=changes), fmt, USER_FIELDS)


@user_app.command("delete")
def user_delete(
    ctx: typer.Context,
    users: Annotated[list[str], typer.Argument(help="User ids or names.")],
) -> None:
    """Delete users (their tokens die with them)."""
    client = api(ctx)
    for user in users:
        client.delete(path("users", user))
        say(f"deleted user {user}")


@user_app.command("password")
def user_password(
    ctx: typer.Context,
    original: Annotated[
        str,
        typer.Option(
            "--original-password", prompt="Current password", hide_input=True, show_default=False
        ),
    ],
    new: Annotated[
        str,
        typer.Option(
            "--new-password",
            prompt="New password",
            hide_input=True,
            confirmation_prompt=True,
            show_default=False,
        ),
    ],
) -> None:
    """Change your own password; every token of yours is revoked."""
    client = api(ctx)
    me = client.whoami()["user"]
    client.post(
        path("users", me["id"], "password"), json={"original_password": original, "password": new}
    )
    say(
        f"changed the password of {me['name']}; every token of yours is revoked: run "
        "`nubes login` again and update any openrc or clouds.yaml file that holds it"
    )


# projects --------------------------------------------------------------------------------------

PROJECT_COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("status", "Status"),
    ("description", "Description"),
]
PROJECT_FIELDS: list[Column] = [
    *PROJECT_COLUMNS,
    ("is_admin_project", "Admin project"),
    ("created_at", "Created"),
    ("updated_at", "Updated"),
]


@project_app.command("create")
def project_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project name.")],
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    disable: Annotated[bool, typer.Option("--disable", help="Create it disabled.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a project."""
    body = {"name": name, "description": description, "enabled": not disable}
    render_one(api(ctx).post(path("projects"), json=body), fmt, PROJECT_FIELDS)


@project_app.command("list")
def project_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only the project with this name.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List projects (yours, or all for cloud admins)."""
    projects = api(ctx).list_all(path("projects"), "projects", {"name": name})
    render_list(projects, PROJECT_COLUMNS, fmt)


@project_app.command("show")
def project_show(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    fmt: FormatOption = Format.table,
) -> None:
    """Show a project."""
    render_one(api(ctx).get(path("projects", project)), fmt, PROJECT_FIELDS)


@project_app.command("set")
def project_set(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    enable: EnableOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Change a project (cloud admins)."""
    changes: dict[str, Any] = {
        key: value
        for key, value in (("name", name), ("description", description), ("enabled", enable))
        if value is not None
    }
    if not changes:
        raise nothing_to_change()
    render_one(api(ctx).patch(path("projects", project), json=changes), fmt, PROJECT_FIELDS)


@project_app.command("delete")
def project_delete(
    ctx: typer.Context,
    projects: Annotated[list[str], typer.Argument(help="Project ids or names.")],
) -> None:
    """Delete projects (they must own nothing)."""
    client = api(ctx)
    for project in projects:
        client.delete(path("projects", project))
        say(f"deleted project {project}")


# roles -----------------------------------------------------------------------------------------

UserOption = Annotated[str, typer.Option("--user", help="User id or name.")]
ProjectOption = Annotated[str, typer.Option("--project", help="Project id or name.")]


@role_app.command("list")
def role_list(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """List the roles; each implies the ones below it."""
    roles = api(ctx).get(path("roles"))["roles"]
    render_list(roles, [("name", "Role"), ("implies", "Implies")], fmt)


@role_app.command("add")
def role_add(
    ctx: typer.Context,
    role: Annotated[RoleName, typer.Argument(help="Role to grant.")],
    user: UserOption,
    project: ProjectOption,
    fmt: FormatOption = Format.table,
) -> None:
    """Grant a user a role on a project."""
    granted = api(ctx).put(path("projects", project, "users", user, "roles", role.value))
    if fmt is Format.json:
        render_one(granted, fmt)
    else:
        say(f"granted {role.value} to user {user} on project {project}")


@role_app.command("remove")
def role_remove(
    ctx: typer.Context,
    role: Annotated[RoleName, typer.Argument(help="Role to revoke.")],
    user: UserOption,
    project: ProjectOption,
) -> None:
    """Revoke a user's role on a project."""
    api(ctx).delete(path("projects", project, "users", user, "roles", role.value))
    say(f"removed {role.value} from user {user} on project {project}")


def _names(client: ApiClient, collection: str) -> dict[str, str]:
    """id → name of users or projects the caller may list; empty when it may not."""
    try:
        return {r["id"]: r["name"] for r in client.list_all(path(collection), collection)}
    except ApiError as exc:
        if exc.status in (403, 404):
            return {}
        raise


@role_app.command("assignments")
def role_assignments(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's.")] = None,
    project: Annotated[str | None, typer.Option(help="Only on this project.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Who holds which role on which project."""
    client = api(ctx)
    rows = client.get(path("role-assignments"), params={"user": user, "project": project})
    rows = rows["role_assignments"]
    if fmt is Format.table:
        users, projects = _names(client, "users"), _names(client, "projects")
        for row in rows:
            row["user"] = users.get(row["user_id"], row["user_id"])
            row["project"] = projects.get(row["project_id"], row["project_id"])
    columns = [("user", "User"), ("project", "Project"), ("role", "Role")]
    render_list(rows, columns, fmt)
