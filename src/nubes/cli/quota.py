"""``nubes quota``: a project's limits with usage, changing them, the defaults.

One option per resource of :data:`nubes.domain.quotas.QUOTA_RESOURCES`; the option names use
dashes (``--floating-ips``), the API underscores (``floating_ips``). -1 means unlimited.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nubes.cli.client import api, path
from nubes.cli.output import Format, FormatOption, print_json, render_list
from nubes.domain.quotas import QUOTA_RESOURCES, UNLIMITED

app = typer.Typer(help="Quotas: per-project limits (-1: unlimited).", no_args_is_help=True)

Limit = Annotated[
    int | None, typer.Option(min=UNLIMITED, help="New limit; -1: unlimited.", show_default=False)
]


def _limit(value: int) -> str:
    return "unlimited" if value == UNLIMITED else str(value)


@app.command("show")
def quota_show(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Argument(help="Project id or name (default: the token's).")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """A project's limits and what it uses."""
    client = api(ctx)
    target = project or client.whoami()["project"]["id"]
    _render(client.get(path("quotas", target)), fmt)


def _render(quota: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.json:
        print_json(quota)
        return
    rows = [
        {"resource": name, "limit": _limit(limit), "in_use": quota["in_use"].get(name, 0)}
        for name, limit in quota["limits"].items()
    ]
    typer.echo(f"project {quota['project_name']} ({quota['project_id']})")
    render_list(rows, [("resource", "Resource"), ("limit", "Limit"), ("in_use", "In use")], fmt)


@app.command("set")
def quota_set(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    instances: Limit = None,
    cores: Limit = None,
    ram: Annotated[int | None, typer.Option(min=UNLIMITED, help="MB.", show_default=False)] = None,
    volumes: Limit = None,
    gigabytes: Limit = None,
    networks: Limit = None,
    ports: Limit = None,
    floating_ips: Limit = None,
    security_groups: Limit = None,
    key_pairs: Annotated[
        int | None, typer.Option(min=UNLIMITED, help="Per user.", show_default=False)
    ] = None,
    server_groups: Limit = None,
    server_group_members: Annotated[
        int | None,
        typer.Option(
            min=UNLIMITED, help="Servers in groups, over the project.", show_default=False
        ),
    ] = None,
    subnets: Limit = None,
    routers: Limit = None,
    security_group_rules: Limit = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Change a project's limits (cloud admins)."""
    given: dict[str, Any] = {
        "instances": instances,
        "cores": cores,
        "ram": ram,
        "volumes": volumes,
        "gigabytes": gigabytes,
        "networks": networks,
        "ports": ports,
        "floating_ips": floating_ips,
        "security_groups": security_groups,
        "key_pairs": key_pairs,
        "server_groups": server_groups,
        "server_group_members": server_group_members,
        "subnets": subnets,
        "routers": routers,
        "security_group_rules": security_group_rules,
    }
    assert set(given) == set(QUOTA_RESOURCES), "an option per quota resource"
    limits = {name: value for name, value in given.items() if value is not None}
    if not limits:
        raise typer.BadParameter("nothing to change: give at least one limit (see --help)")
    _render(api(ctx).patch(path("quotas", project), json={"limits": limits}), fmt)


@app.command("defaults")
def quota_defaults(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """The limits a new project gets."""
    defaults = api(ctx).get(path("quotas", "defaults"))
    if fmt is Format.json:
        print_json(defaults)
        return
    rows = [{"resource": name, "limit": _limit(limit)} for name, limit in defaults.items()]
    render_list(rows, [("resource", "Resource"), ("limit", "Limit")], fmt)
