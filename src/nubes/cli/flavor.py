"""``nubes flavor``: the instance-size catalogue, and which projects see a private flavor."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nubes.cli.client import ApiClient, api, path
from nubes.cli.errors import ApiError
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say

app = typer.Typer(help="Flavors: vCPUs, RAM and disk sizes for instances.", no_args_is_help=True)
access_app = typer.Typer(help="Which projects may use a private flavor.", no_args_is_help=True)
app.add_typer(access_app, name="access")

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("vcpus", "VCPUs"),
    ("ram_mb", "RAM (MB)"),
    ("disk_gb", "Disk (GB)"),
    ("is_public", "Public"),
]
FIELDS: list[Column] = [
    *COLUMNS[:5],
    ("ephemeral_gb", "Ephemeral (GB)"),
    ("swap_mb", "Swap (MB)"),
    ("is_public", "Public"),
    ("description", "Description"),
    ("extra_specs", "Properties"),
    ("created_at", "Created"),
    ("updated_at", "Updated"),
]

FlavorArgument = Annotated[str, typer.Argument(help="Flavor id or name.")]
PropertyOption = Annotated[
    list[str] | None, typer.Option("--property", help="KEY=VALUE (repeat).", show_default=False)
]


def parse_properties(pairs: list[str] | None) -> dict[str, str]:
    properties: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--property")
        properties[key] = value
    return properties


@app.command("create")
def flavor_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Flavor name.")],
    vcpus: Annotated[int, typer.Option(min=1, help="Virtual CPUs.")],
    ram: Annotated[int, typer.Option(min=1, help="RAM in MB.")],
    disk: Annotated[int, typer.Option(min=0, help="Root disk in GB (0: the image's size).")],
    ephemeral: Annotated[int, typer.Option(min=0, help="Ephemeral disk in GB.")] = 0,
    swap: Annotated[int, typer.Option(min=0, help="Swap in MB.")] = 0,
    private: Annotated[
        bool, typer.Option("--private", help="Only projects given access see it.")
    ] = False,
    flavor_id: Annotated[
        str | None, typer.Option("--id", help="Its id (default: a new UUID).")
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    properties: PropertyOption = None,
    projects: Annotated[
        list[str] | None,
        typer.Option("--project", help="Give this project access (repeat; --private only)."),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a flavor (cloud admins)."""
    if projects and not private:
        raise typer.BadParameter("projects get access to private flavors: add --private")
    body: dict[str, Any] = {
        "name": name,
        "vcpus": vcpus,
        "ram_mb": ram,
        "disk_gb": disk,
        "ephemeral_gb": ephemeral,
        "swap_mb": swap,
        "is_public": not private,
        "description": description,
        "extra_specs": parse_properties(properties),
        "projects": projects or [],
    }
    if flavor_id:
        body["id"] = flavor_id
    render_one(api(ctx).post(path("flavors"), json=body), fmt, FIELDS)


@app.command("list")
def flavor_list(
    ctx: typer.Context,
    public: Annotated[
        bool | None,
        typer.Option(
            "--public/--private", help="Only public or only private ones.", show_default=False
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only the flavor with this name.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List the flavors you may use (cloud admins: all)."""
    flavors = api(ctx).list_all(path("flavors"), "flavors", {"is_public": public, "name": name})
    render_list(flavors, COLUMNS, fmt)


@app.command("show")
def flavor_show(
    ctx: typer.Context, flavor: FlavorArgument, fmt: FormatOption = Format.table
) -> None:
    """Show a flavor."""
    render_one(api(ctx).get(path("flavors", flavor)), fmt, FIELDS)


@app.command("set")
def flavor_set(
    ctx: typer.Context,
    flavor: FlavorArgument,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    properties: PropertyOption = None,
    unset: Annotated[
        list[str] | None,
        typer.Option("--unset-property", help="Remove this property (repeat).", show_default=False),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Rename a flavor, or change its description or properties (sizes never change)."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if description is not None:
        changes["description"] = description
    specs: dict[str, str | None] = {**parse_properties(properties)}
    specs.update(dict.fromkeys(unset or []))
    if specs:
        changes["extra_specs"] = specs
    if not changes:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    render_one(api(ctx).patch(path("flavors", flavor), json=changes), fmt, FIELDS)


@app.command("delete")
def flavor_delete(
    ctx: typer.Context, flavors: Annotated[list[str], typer.Argument(help="Flavor ids or names.")]
) -> None:
    """Delete flavors."""
    client = api(ctx)
    for flavor in flavors:
        client.delete(path("flavors", flavor))
        say(f"deleted flavor {flavor}")


def _render_access(client: ApiClient, access: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.json:
        render_one(access, fmt)
        return
    try:
        names = {p["id"]: p["name"] for p in client.list_all(path("projects"), "projects")}
    except ApiError:
        names = {}
    rows = [{"id": pid, "name": names.get(pid, "")} for pid in access["projects"]]
    render_list(rows, [("id", "Project id"), ("name", "Project")], fmt)


ProjectArgument = Annotated[str, typer.Argument(help="Project id or name.")]


@access_app.command("list")
def access_list(
    ctx: typer.Context, flavor: FlavorArgument, fmt: FormatOption = Format.table
) -> None:
    """The projects that may use a private flavor."""
    client = api(ctx)
    _render_access(client, client.get(path("flavors", flavor, "access")), fmt)


@access_app.command("add")
def access_add(
    ctx: typer.Context,
    flavor: FlavorArgument,
    project: ProjectArgument,
    fmt: FormatOption = Format.table,
) -> None:
    """Let a project use a private flavor."""
    client = api(ctx)
    access = client.post(path("flavors", flavor, "access"), json={"project": project})
    _render_access(client, access, fmt)


@access_app.command("remove")
def access_remove(
    ctx: typer.Context,
    flavor: FlavorArgument,
    project: ProjectArgument,
    fmt: FormatOption = Format.table,
) -> None:
    """Take a project's access to a private flavor away."""
    client = api(ctx)
    _render_access(client, client.delete(path("flavors", flavor, "access", project)), fmt)
