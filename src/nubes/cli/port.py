"""``nubes port``: ports on networks (a MAC, fixed IPs, security groups)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nubes.cli.client import api, path
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say

app = typer.Typer(help="Ports: a MAC and fixed IPs on a network.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("mac_address", "MAC"),
    ("fixed_ips", "Fixed IPs"),
    ("status", "Status"),
]
FIELDS: list[Column] = [
    *COLUMNS,
    ("network_id", "Network"),
    ("security_groups", "Security groups"),
    ("port_security_enabled", "Port security"),
    ("allowed_address_pairs", "Allowed address pairs"),
    ("device_owner", "Device owner"),
    ("device_id", "Device"),
    ("binding_host_id", "Host"),
    ("project_id", "Project"),
    ("description", "Description"),
    ("created_at", "Created"),
]

PortArgument = Annotated[str, typer.Argument(help="Port id or name.")]
FIXED_IP_KEYS = {"subnet": "subnet_id", "ip-address": "ip_address"}


def parse_fixed_ip(text: str) -> dict[str, str]:
    """``subnet=S,ip-address=A`` (either part may be left out)."""
    result: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in FIXED_IP_KEYS or not value.strip():
            raise typer.BadParameter(
                f"{text!r} is not subnet=SUBNET,ip-address=ADDRESS", param_hint="--fixed-ip"
            )
        result[FIXED_IP_KEYS[key.strip()]] = value.strip()
    return result


def _table(port: dict[str, Any]) -> dict[str, Any]:
    return {**port, "fixed_ips": [f"{f['ip_address']}" for f in port["fixed_ips"]]}


@app.command("create")
def port_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Port name.")],
    network: Annotated[str, typer.Option("--network", help="Network id or name.")],
    fixed_ips: Annotated[
        list[str] | None,
        typer.Option(
            "--fixed-ip",
            help="subnet=SUBNET,ip-address=ADDRESS, either part optional (repeat).",
            show_default=False,
        ),
    ] = None,
    no_fixed_ip: Annotated[bool, typer.Option("--no-fixed-ip", help="No address at all.")] = False,
    groups: Annotated[
        list[str] | None,
        typer.Option(
            "--security-group", help="Id or name (repeat; default: `default`).", show_default=False
        ),
    ] = None,
    no_security: Annotated[
        bool, typer.Option("--disable-port-security", help="No filtering, no groups.")
    ] = False,
    mac: Annotated[str | None, typer.Option("--mac", help="Default: fa:16:3e:xx:xx:xx.")] = None,
    allowed: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-address",
            help="An extra address or CIDR it may send from (repeat).",
            show_default=False,
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    fmt: FormatOption = Format.table,
) -> None:
    """Create a port."""
    if fixed_ips and no_fixed_ip:
        raise typer.BadParameter("give --fixed-ip or --no-fixed-ip, not both")
    body: dict[str, Any] = {
        "name": name,
        "network_id": network,
        "port_security_enabled": not no_security,
        "allowed_address_pairs": [{"ip_address": a} for a in allowed or []],
        "description": description,
    }
    if no_fixed_ip:
        body["fixed_ips"] = []
    elif fixed_ips:
        body["fixed_ips"] = [parse_fixed_ip(f) for f in fixed_ips]
    if groups is not None:
        body["security_groups"] = groups
    elif no_security:
        body["security_groups"] = []
    if mac is not None:
        body["mac_address"] = mac
    _render(api(ctx).post(path("ports"), json=body), fmt)


def _render(port: dict[str, Any], fmt: Format) -> None:
    render_one(_table(port) if fmt is Format.table else port, fmt, FIELDS)


@app.command("list")
def port_list(
    ctx: typer.Context,
    network: Annotated[str | None, typer.Option(help="Only ports on this network.")] = None,
    name: Annotated[str | None, typer.Option(help="Only ports with this name.")] = None,
    device: Annotated[str | None, typer.Option(help="Only ports of this device id.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Your project's ports."""
    rows = api(ctx).list_all(
        path("ports"), "ports", {"network_id": network, "name": name, "device_id": device}
    )
    render_list([_table(r) for r in rows] if fmt is Format.table else rows, COLUMNS, fmt)


@app.command("show")
def port_show(ctx: typer.Context, port: PortArgument, fmt: FormatOption = Format.table) -> None:
    """Show a port."""
    _render(api(ctx).get(path("ports", port)), fmt)


@app.command("set")
def port_set(
    ctx: typer.Context,
    port: PortArgument,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    groups: Annotated[
        list[str] | None,
        typer.Option(
            "--security-group", help="The new groups (repeat; replaces them).", show_default=False
        ),
    ] = None,
    no_groups: Annotated[
        bool, typer.Option("--no-security-group", help="Take every group off.")
    ] = (False),
    fmt: FormatOption = Format.table,
) -> None:
    """Rename a port or change its security groups."""
    changes: dict[str, Any] = {
        k: v for k, v in {"name": name, "description": description}.items() if v is not None
    }
    if groups and no_groups:
        raise typer.BadParameter("give --security-group or --no-security-group, not both")
    if groups or no_groups:
        changes["security_groups"] = groups or []
    if not changes:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    _render(api(ctx).patch(path("ports", port), json=changes), fmt)


@app.command("delete")
def port_delete(
    ctx: typer.Context, ports: Annotated[list[str], typer.Argument(help="Port ids or names.")]
) -> None:
    """Delete ports (not those of instances, routers, DHCP or floating IPs)."""
    client = api(ctx)
    for port in ports:
        client.delete(path("ports", port))
        say(f"deleted port {port}")
