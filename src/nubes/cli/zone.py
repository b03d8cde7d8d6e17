"""``nubes zone``: the availability zones and whether each can take servers now."""

from __future__ import annotations

from typing import Annotated

import typer

from nubes.cli.client import api, path
from nubes.cli.errors import CliError
from nubes.cli.output import Column, Format, FormatOption, print_json, render_list

app = typer.Typer(help="Availability zones.", no_args_is_help=True)

COLUMNS: list[Column] = [("name", "Zone"), ("state", "State")]
LONG_COLUMNS: list[Column] = [*COLUMNS, ("hosts", "Hosts")]


@app.command("list")
def zone_list(
    ctx: typer.Context,
    long: Annotated[
        bool, typer.Option("--long", help="Also each zone's hosts (cloud admins).")
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """List the zones: available when at least one of its hosts is up and enabled."""
    zones = api(ctx).list_all(path("availability-zones"), "availability_zones")
    if fmt is Format.json:
        print_json(zones)
        return
    if long and any(z.get("hosts") is None for z in zones):
        raise CliError("--long: only cloud admins see the hosts of a zone")
    rows = [{**z, "state": "available" if z["available"] else "not available"} for z in zones]
    render_list(rows, LONG_COLUMNS if long else COLUMNS, fmt)
