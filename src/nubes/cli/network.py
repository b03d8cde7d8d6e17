"""``nubes network`` and ``nubes subnet``: layer-2 networks and their address ranges."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nubes.cli.client import api, path
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say

app = typer.Typer(
    help="Networks: layer-2 segments (vxlan, vlan, flat, local).", no_args_is_help=True
)
subnet_app = typer.Typer(help="Subnets: address ranges on a network.", no_args_is_help=True)

NETWORK_COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("network_type", "Type"),
    ("segmentation_id", "Segment"),
    ("shared", "Shared"),
    ("router_external", "External"),
    ("subnets", "Subnets"),
]
NETWORK_FIELDS: list[Column] = [
    *NETWORK_COLUMNS,
    ("physical_network", "Physical network"),
    ("mtu", "MTU"),
    ("project_id", "Project"),
    ("description", "Description"),
    ("admin_state_up", "Admin state up"),
    ("status", "Status"),
    ("created_at", "Created"),
]
SUBNET_COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("network_id", "Network"),
    ("cidr", "CIDR"),
    ("gateway_ip", "Gateway"),
]
SUBNET_FIELDS: list[Column] = [
    *SUBNET_COLUMNS,
    ("ip_version", "IP version"),
    ("allocation_pools", "Allocation pools"),
    ("dns_nameservers", "DNS servers"),
    ("host_routes", "Host routes"),
    ("enable_dhcp", "DHCP"),
    ("project_id", "Project"),
    ("description", "Description"),
    ("created_at", "Created"),
]

NetworkArgument = Annotated[str, typer.Argument(help="Network id or name.")]
SubnetArgument = Annotated[str, typer.Argument(help="Subnet id or name.")]


def _render_subnet(subnet: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.table:
        subnet = {
            **subnet,
            "allocation_pools": [f"{p['start']}-{p['end']}" for p in subnet["allocation_pools"]],
            "host_routes": [
                f"{r['destination']} via {r['nexthop']}" for r in subnet["host_routes"]
            ],
        }
    render_one(subnet, fmt, SUBNET_FIELDS)


@app.command("create")
def network_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name.")],
    network_type: Annotated[
        str, typer.Option("--type", help="vxlan (default), vlan, flat or local.")
    ] = "vxlan",
    shared: Annotated[bool, typer.Option("--shared", help="Every project may use it.")] = False,
    external: Annotated[
        bool, typer.Option("--external", help="Routers' gateways and floating IPs use it.")
    ] = False,
    segment: Annotated[
        int | None, typer.Option("--segment", help="VNI or VLAN id (default: allocated).")
    ] = None,
    physical_network: Annotated[
        str | None, typer.Option("--physical-network", help="The hosts' uplink (flat, vlan).")
    ] = None,
    mtu: Annotated[int | None, typer.Option(help="Default: the largest the type allows.")] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    fmt: FormatOption = Format.table,
) -> None:
    """Create a network (shared, external, flat, vlan and --segment: cloud admins)."""
    body: dict[str, Any] = {
        "name": name,
        "network_type": network_type,
        "shared": shared,
        "router_external": external,
        "description": description,
    }
    for key, value in (
        ("segmentation_id", segment),
        ("physical_network", physical_network),
        ("mtu", mtu),
    ):
        if value is not None:
            body[key] = value
    render_one(api(ctx).post(path("networks"), json=body), fmt, NETWORK_FIELDS)


@app.command("list")
def network_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only networks with this name.")] = None,
    external: Annotated[
        bool | None,
        typer.Option(
            "--external/--internal", help="Only external or internal ones.", show_default=False
        ),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Networks you can see: your project's, shared and external ones."""
    rows = api(ctx).list_all(
        path("networks"), "networks", {"name": name, "router_external": external}
    )
    render_list(rows, NETWORK_COLUMNS, fmt)


@app.command("show")
def network_show(
    ctx: typer.Context, network: NetworkArgument, fmt: FormatOption = Format.table
) -> None:
    """Show a network."""
    render_one(api(ctx).get(path("networks", network)), fmt, NETWORK_FIELDS)


@app.command("set")
def network_set(
    ctx: typer.Context,
    network: NetworkArgument,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    shared: Annotated[
        bool | None,
        typer.Option("--shared/--no-shared", help="Share with every project.", show_default=False),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Rename a network, change its description, or (cloud admins) share it."""
    changes = {
        k: v
        for k, v in {"name": name, "description": description, "shared": shared}.items()
        if v is not None
    }
    if not changes:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    render_one(api(ctx).patch(path("networks", network), json=changes), fmt, NETWORK_FIELDS)


@app.command("delete")
def network_delete(
    ctx: typer.Context,
    networks: Annotated[list[str], typer.Argument(help="Network ids or names.")],
) -> None:
    """Delete networks (with their subnets; refused while ports remain)."""
    client = api(ctx)
    for network in networks:
        client.delete(path("networks", network))
        say(f"deleted network {network}")


# subnets ------------------------------------------------------------------------------------


def parse_pool(text: str) -> dict[str, str]:
    start, sep, end = text.partition("-")
    if not sep or not start or not end:
        raise typer.BadParameter(f"{text!r} is not START-END", param_hint="--pool")
    return {"start": start.strip(), "end": end.strip()}


def parse_route(text: str) -> dict[str, str]:
    destination, sep, nexthop = text.partition("=")
    if not sep or not destination or not nexthop:
        raise typer.BadParameter(f"{text!r} is not DESTINATION=NEXTHOP", param_hint="--route")
    return {"destination": destination.strip(), "nexthop": nexthop.strip()}


RouteOption = Annotated[
    list[str] | None,
    typer.Option("--route", help="A host route DESTINATION=NEXTHOP (repeat).", show_default=False),
]
DnsOption = Annotated[
    list[str] | None, typer.Option("--dns", help="A DNS server (repeat).", show_default=False)
]


@subnet_app.command("create")
def subnet_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Subnet name.")],
    network: Annotated[str, typer.Option("--network", help="Network id or name.")],
    cidr: Annotated[str, typer.Option(help="Such as 10.0.0.0/24 or fd00::/64.")],
    gateway: Annotated[
        str | None, typer.Option(help="Default: the first address.", show_default=False)
    ] = None,
    no_gateway: Annotated[bool, typer.Option("--no-gateway", help="No gateway at all.")] = False,
    pools: Annotated[
        list[str] | None,
        typer.Option("--pool", help="An allocation pool START-END (repeat).", show_default=False),
    ] = None,
    dns: DnsOption = None,
    routes: RouteOption = None,
    no_dhcp: Annotated[bool, typer.Option("--no-dhcp", help="No DHCP on this subnet.")] = False,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    fmt: FormatOption = Format.table,
) -> None:
    """Create a subnet on a network."""
    if gateway is not None and no_gateway:
        raise typer.BadParameter("give --gateway or --no-gateway, not both")
    body: dict[str, Any] = {
        "name": name,
        "network_id": network,
        "cidr": cidr,
        "dns_nameservers": dns or [],
        "host_routes": [parse_route(r) for r in routes or []],
        "enable_dhcp": not no_dhcp,
        "description": description,
    }
    if no_gateway:
        body["gateway_ip"] = None
    elif gateway is not None:
        body["gateway_ip"] = gateway
    if pools:
        body["allocation_pools"] = [parse_pool(p) for p in pools]
    _render_subnet(api(ctx).post(path("subnets"), json=body), fmt)


@subnet_app.command("list")
def subnet_list(
    ctx: typer.Context,
    network: Annotated[str | None, typer.Option(help="Only this network's subnets.")] = None,
    name: Annotated[str | None, typer.Option(help="Only subnets with this name.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Subnets you can see."""
    rows = api(ctx).list_all(path("subnets"), "subnets", {"network_id": network, "name": name})
    render_list(rows, SUBNET_COLUMNS, fmt)


@subnet_app.command("show")
def subnet_show(
    ctx: typer.Context, subnet: SubnetArgument, fmt: FormatOption = Format.table
) -> None:
    """Show a subnet."""
    _render_subnet(api(ctx).get(path("subnets", subnet)), fmt)


@subnet_app.command("set")
def subnet_set(
    ctx: typer.Context,
    subnet: SubnetArgument,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    dns: DnsOption = None,
    routes: RouteOption = None,
    dhcp: Annotated[
        bool | None,
        typer.Option("--dhcp/--no-dhcp", help="Turn DHCP on or off.", show_default=False),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Change a subnet's name, description, DNS servers (replaced), routes (replaced) or DHCP."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {"name": name, "description": description, "enable_dhcp": dhcp}.items()
        if v is not None
    }
    if dns is not None:
        changes["dns_nameservers"] = dns
    if routes is not None:
        changes["host_routes"] = [parse_route(r) for r in routes]
    if not changes:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    _render_subnet(api(ctx).patch(path("subnets", subnet), json=changes), fmt)


@subnet_app.command("delete")
def subnet_delete(
    ctx: typer.Context, subnets: Annotated[list[str], typer.Argument(help="Subnet ids or names.")]
) -> None:
    """Delete subnets (refused while ports have addresses on them)."""
    client = api(ctx)
    for subnet in subnets:
        client.delete(path("subnets", subnet))
        say(f"deleted subnet {subnet}")
