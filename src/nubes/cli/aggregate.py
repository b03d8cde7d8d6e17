"""``nubes aggregate`` (cloud admins): sets of hosts with metadata the scheduler matches against
flavor extra specs, allocation-ratio and instance-cap overrides, and an availability zone."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nubes.cli.client import api, path
from nubes.cli.flavor import parse_properties
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say

app = typer.Typer(
    help="Host aggregates and their availability zones (cloud admins).", no_args_is_help=True
)

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("availability_zone", "Availability zone"),
    ("hosts", "Hosts"),
    ("metadata", "Properties"),
]
FIELDS: list[Column] = [
    *COLUMNS,
    ("created_at", "Created"),
    ("updated_at", "Updated"),
]

AggregateArgument = Annotated[str, typer.Argument(help="Aggregate id or name.")]
HostArgument = Annotated[str, typer.Argument(help="Host id or name.")]
ZoneOption = Annotated[
    str | None, typer.Option("--zone", help="Availability zone of its hosts.", show_default=False)
]
PropertyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--property",
        help="KEY=VALUE (repeat). Special: cpu_allocation_ratio, ram_allocation_ratio, "
        "disk_allocation_ratio, max_instances_per_host.",
        show_default=False,
    ),
]


@app.command("create")
def aggregate_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Aggregate name.")],
    zone: ZoneOption = None,
    properties: PropertyOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create an aggregate, optionally an availability zone."""
    body: dict[str, Any] = {"name": name, "metadata": parse_properties(properties)}
    if zone is not None:
        body["availability_zone"] = zone
    render_one(api(ctx).post(path("aggregates"), json=body), fmt, FIELDS)


@app.command("list")
def aggregate_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only the aggregate with this name.")] = None,
    zone: ZoneOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List the aggregates with their zone, hosts and properties."""
    params = {"name": name, "availability_zone": zone}
    render_list(api(ctx).list_all(path("aggregates"), "aggregates", params), COLUMNS, fmt)


@app.command("show")
def aggregate_show(
    ctx: typer.Context, aggregate: AggregateArgument, fmt: FormatOption = Format.table
) -> None:
    """Show an aggregate: zone, hosts, properties."""
    render_one(api(ctx).get(path("aggregates", aggregate)), fmt, FIELDS)


@app.command("set")
def aggregate_set(
    ctx: typer.Context,
    aggregate: AggregateArgument,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    zone: ZoneOption = None,
    properties: PropertyOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Rename an aggregate, move it (and its hosts) to a zone, or set properties."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if zone is not None:
        changes["availability_zone"] = zone
    if properties:
        changes["metadata"] = parse_properties(properties)
    if not changes:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    render_one(api(ctx).patch(path("aggregates", aggregate), json=changes), fmt, FIELDS)


@app.command("unset")
def aggregate_unset(
    ctx: typer.Context,
    aggregate: AggregateArgument,
    properties: Annotated[
        list[str] | None,
        typer.Option("--property", help="Remove this property (repeat).", show_default=False),
    ] = None,
    zone: Annotated[
        bool, typer.Option("--zone", help="Take the aggregate out of its availability zone.")
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Remove properties, or the availability zone, of an aggregate."""
    changes: dict[str, Any] = {}
    if properties:
        changes["metadata"] = dict.fromkeys(properties)
    if zone:
        changes["availability_zone"] = None
    if not changes:
        raise typer.BadParameter("nothing to unset: give --property KEY or --zone")
    render_one(api(ctx).patch(path("aggregates", aggregate), json=changes), fmt, FIELDS)


@app.command("add-host")
def aggregate_add_host(
    ctx: typer.Context,
    aggregate: AggregateArgument,
    host: HostArgument,
    fmt: FormatOption = Format.table,
) -> None:
    """Put a host in an aggregate (and in its zone, if it has one)."""
    body = {"host": host}
    render_one(api(ctx).post(path("aggregates", aggregate, "hosts"), json=body), fmt, FIELDS)


@app.command("remove-host")
def aggregate_remove_host(
    ctx: typer.Context,
    aggregate: AggregateArgument,
    host: HostArgument,
    fmt: FormatOption = Format.table,
) -> None:
    """Take a host out of an aggregate."""
    render_one(api(ctx).delete(path("aggregates", aggregate, "hosts", host)), fmt, FIELDS)


@app.command("delete")
def aggregate_delete(
    ctx: typer.Context,
    aggregates: Annotated[list[str], typer.Argument(help="Aggregate ids or names.")],
) -> None:
    """Delete aggregates that have no hosts."""
    client = api(ctx)
    for aggregate in aggregates:
        client.delete(path("aggregates", aggregate))
        say(f"deleted aggregate {aggregate}")
