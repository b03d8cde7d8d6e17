"""``nubes router`` and ``nubes floating-ip``: joining subnets, reaching outside, and public
addresses mapped to ports."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nubes.cli.client import api, path
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say

app = typer.Typer(help="Routers: join subnets, and reach external networks.", no_args_is_help=True)
fip_app = typer.Typer(
    help="Floating IPs: addresses of an external network mapped to ports.", no_args_is_help=True
)

ROUTER_COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("gateway", "External gateway"),
    ("interfaces", "Interfaces"),
]
ROUTER_FIELDS: list[Column] = [
    *ROUTER_COLUMNS,
    ("snat", "SNAT"),
    ("host_id", "Host"),
    ("project_id", "Project"),
    ("description", "Description"),
    ("status", "Status"),
    ("created_at", "Created"),
]
FIP_COLUMNS: list[Column] = [
    ("id", "ID"),
    ("floating_ip_address", "Floating IP"),
    ("fixed_ip_address", "Fixed IP"),
    ("port_id", "Port"),
    ("floating_network_id", "Network"),
]
FIP_FIELDS: list[Column] = [
    *FIP_COLUMNS,
    ("router_id", "Router"),
    ("status", "Status"),
    ("project_id", "Project"),
    ("description", "Description"),
    ("created_at", "Created"),
]

RouterArgument = Annotated[str, typer.Argument(help="Router id or name.")]
SubnetArgument = Annotated[str, typer.Argument(help="Subnet id or name.")]
FipArgument = Annotated[str, typer.Argument(help="Floating IP id or address.")]


def _table(router: dict[str, Any]) -> dict[str, Any]:
    gateway = router["external_gateway_info"]
    return {
        **router,
        "gateway": (
            f"{gateway['network_id']} "
            + " ".join(f["ip_address"] for f in gateway["external_fixed_ips"])
            if gateway
            else ""
        ),
        "snat": gateway["enable_snat"] if gateway else None,
        "interfaces": [f"{i['ip_address']} ({i['subnet_id']})" for i in router["interfaces"]],
    }


def _render(router: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.json:
        render_one(router, fmt)
    else:
        render_one(_table(router), fmt, ROUTER_FIELDS)


GatewayOption = Annotated[
    str | None,
    typer.Option("--external-gateway", help="External network id or name.", show_default=False),
]
SnatOption = Annotated[
    bool, typer.Option("--snat/--no-snat", help="Masquerade outgoing traffic (with a gateway).")
]


@app.command("create")
def router_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Router name.")],
    gateway: GatewayOption = None,
    snat: SnatOption = True,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    fmt: FormatOption = Format.table,
) -> None:
    """Create a router."""
    body: dict[str, Any] = {"name": name, "description": description}
    if gateway is not None:
        body["external_gateway_info"] = {"network_id": gateway, "enable_snat": snat}
    _render(api(ctx).post(path("routers"), json=body), fmt)


@app.command("list")
def router_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only routers with this name.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Your project's routers."""
    rows = api(ctx).list_all(path("routers"), "routers", {"name": name})
    render_list([_table(r) for r in rows] if fmt is Format.table else rows, ROUTER_COLUMNS, fmt)


@app.command("show")
def router_show(
    ctx: typer.Context, router: RouterArgument, fmt: FormatOption = Format.table
) -> None:
    """Show a router with its gateway and interfaces."""
    _render(api(ctx).get(path("routers", router)), fmt)


@app.command("set")
def router_set(
    ctx: typer.Context,
    router: RouterArgument,
    gateway: GatewayOption = None,
    snat: SnatOption = True,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Set a router's external gateway, or rename it."""
    client = api(ctx)
    changes = {k: v for k, v in {"name": name, "description": description}.items() if v is not None}
    if gateway is None and not changes:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    result = None
    if changes:
        result = client.patch(path("routers", router), json=changes)
        router = result["id"]
    if gateway is not None:
        body = {"network_id": gateway, "enable_snat": snat}
        result = client.put(path("routers", router, "gateway"), json=body)
    assert result is not None
    _render(result, fmt)


@app.command("unset")
def router_unset(
    ctx: typer.Context,
    router: RouterArgument,
    gateway: Annotated[
        bool, typer.Option("--external-gateway", help="Remove the external gateway.")
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Remove a router's external gateway."""
    if not gateway:
        raise typer.BadParameter("nothing to unset: give --external-gateway")
    _render(api(ctx).delete(path("routers", router, "gateway")), fmt)


@app.command("add-subnet")
def router_add_subnet(
    ctx: typer.Context,
    router: RouterArgument,
    subnet: SubnetArgument,
    fmt: FormatOption = Format.table,
) -> None:
    """Attach a subnet: the router takes its gateway address."""
    body = {"subnet_id": subnet}
    _render(api(ctx).post(path("routers", router, "interfaces"), json=body), fmt)


@app.command("remove-subnet")
def router_remove_subnet(
    ctx: typer.Context,
    router: RouterArgument,
    subnet: SubnetArgument,
    fmt: FormatOption = Format.table,
) -> None:
    """Detach a subnet."""
    _render(api(ctx).delete(path("routers", router, "interfaces", subnet)), fmt)


@app.command("delete")
def router_delete(
    ctx: typer.Context, routers: Annotated[list[str], typer.Argument(help="Router ids or names.")]
) -> None:
    """Delete routers (their subnets must be removed first)."""
    client = api(ctx)
    for router in routers:
        client.delete(path("routers", router))
        say(f"deleted router {router}")


# floating IPs ------------------------------------------------------------------------------


@fip_app.command("create")
def fip_create(
    ctx: typer.Context,
    network: Annotated[str, typer.Argument(help="External network id or name.")],
    port: Annotated[str | None, typer.Option(help="Map it to this port at once.")] = None,
    fixed_ip: Annotated[
        str | None, typer.Option("--fixed-ip", help="Which address of the port.")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="This address (cloud admins).")
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    fmt: FormatOption = Format.table,
) -> None:
    """Allocate a floating IP from an external network."""
    body: dict[str, Any] = {"floating_network_id": network, "description": description}
    for key, value in (
        ("port_id", port),
        ("fixed_ip_address", fixed_ip),
        ("floating_ip_address", address),
    ):
        if value is not None:
            body[key] = value
    render_one(api(ctx).post(path("floating-ips"), json=body), fmt, FIP_FIELDS)


@fip_app.command("list")
def fip_list(
    ctx: typer.Context,
    network: Annotated[str | None, typer.Option(help="Only from this external network.")] = None,
    port: Annotated[str | None, typer.Option(help="Only those mapped to this port.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Your project's floating IPs."""
    params = {"floating_network_id": network, "port_id": port}
    render_list(api(ctx).list_all(path("floating-ips"), "floating_ips", params), FIP_COLUMNS, fmt)


@fip_app.command("show")
def fip_show(ctx: typer.Context, fip: FipArgument, fmt: FormatOption = Format.table) -> None:
    """Show a floating IP."""
    render_one(api(ctx).get(path("floating-ips", fip)), fmt, FIP_FIELDS)


@fip_app.command("set")
def fip_set(
    ctx: typer.Context,
    fip: FipArgument,
    port: Annotated[str, typer.Option(help="Port id or name to map it to.")],
    fixed_ip: Annotated[
        str | None, typer.Option("--fixed-ip", help="Which address of the port.")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Map a floating IP to a port."""
    body = {"port_id": port, "fixed_ip_address": fixed_ip}
    render_one(api(ctx).put(path("floating-ips", fip, "association"), json=body), fmt, FIP_FIELDS)


@fip_app.command("unset")
def fip_unset(ctx: typer.Context, fip: FipArgument, fmt: FormatOption = Format.table) -> None:
    """Unmap a floating IP (it stays yours)."""
    render_one(api(ctx).delete(path("floating-ips", fip, "association")), fmt, FIP_FIELDS)


@fip_app.command("delete")
def fip_delete(
    ctx: typer.Context, fips: Annotated[list[str], typer.Argument(help="Ids or addresses.")]
) -> None:
    """Release floating IPs."""
    client = api(ctx)
    for fip in fips:
        client.delete(path("floating-ips", fip))
        say(f"deleted floating IP {fip}")
