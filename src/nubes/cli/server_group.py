"""``nubes server-group``: your project's groups of servers, placed on one host (affinity) or
on different hosts (anti-affinity), strictly or when possible (soft-)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from nubes.cli.client import api, path
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say

app = typer.Typer(help="Server groups: affinity and anti-affinity.", no_args_is_help=True)


class Policy(StrEnum):
    affinity = "affinity"
    anti_affinity = "anti-affinity"
    soft_affinity = "soft-affinity"
    soft_anti_affinity = "soft-anti-affinity"


COLUMNS: list[Column] = [("id", "ID"), ("name", "Name"), ("policy", "Policy")]
FIELDS: list[Column] = [
    *COLUMNS,
    ("members_shown", "Members"),
    ("project_id", "Project"),
    ("user_id", "User"),
    ("created_at", "Created"),
]

GroupArgument = Annotated[str, typer.Argument(help="Server group id or name.")]


def _for_people(group: dict[str, Any]) -> dict[str, Any]:
    members = [f"{m['name']} ({m['id']})" for m in group.get("members", [])]
    return {**group, "members_shown": "\n".join(members)}


@app.command("create")
def group_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Server group name.")],
    policy: Annotated[Policy, typer.Option(help="Where its servers go.")],
    fmt: FormatOption = Format.table,
) -> None:
    """Create a server group; give it to `server create --group`."""
    made = api(ctx).post(path("server-groups"), json={"name": name, "policy": policy.value})
    render_one(made if fmt is Format.json else _for_people(made), fmt, FIELDS)


@app.command("list")
def group_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only the group with this name.")] = None,
    all_projects: Annotated[
        bool, typer.Option("--all-projects", help="Cloud admins: every project's groups.")
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """List your project's server groups."""
    params = {"name": name, "all_projects": all_projects or None}
    groups = api(ctx).list_all(path("server-groups"), "server_groups", params)
    columns = [*COLUMNS, ("project_id", "Project")] if all_projects else COLUMNS
    render_list(groups, columns, fmt)


@app.command("show")
def group_show(ctx: typer.Context, group: GroupArgument, fmt: FormatOption = Format.table) -> None:
    """Show a server group and its servers."""
    shown = api(ctx).get(path("server-groups", group))
    render_one(shown if fmt is Format.json else _for_people(shown), fmt, FIELDS)


@app.command("delete")
def group_delete(
    ctx: typer.Context,
    groups: Annotated[list[str], typer.Argument(help="Server group ids or names.")],
) -> None:
    """Delete server groups; their servers keep running."""
    client = api(ctx)
    for group in groups:
        client.delete(path("server-groups", group))
        say(f"deleted server group {group}")
