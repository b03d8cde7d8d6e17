"""``nubes security-group`` and ``nubes security-group rule``: what may reach a port."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from nubes.cli.client import api, path
from nubes.cli.output import Column, Format, FormatOption, render_list, render_one, say

app = typer.Typer(
    help="Security groups: allow rules applied to the ports in them.", no_args_is_help=True
)
rule_app = typer.Typer(help="Rules of a security group.", no_args_is_help=True)
app.add_typer(rule_app, name="rule")

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("description", "Description"),
    ("rule_count", "Rules"),
]
FIELDS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("description", "Description"),
    ("project_id", "Project"),
    ("rules", "Rules"),
    ("created_at", "Created"),
]
RULE_COLUMNS: list[Column] = [
    ("id", "ID"),
    ("direction", "Direction"),
    ("ethertype", "Ethertype"),
    ("protocol", "Protocol"),
    ("ports", "Ports"),
    ("remote", "Remote"),
]

GroupArgument = Annotated[str, typer.Argument(help="Security group id or name.")]


class Direction(StrEnum):
    ingress = "ingress"
    egress = "egress"


class Ethertype(StrEnum):
    ipv4 = "IPv4"
    ipv6 = "IPv6"


def parse_ports(text: str) -> tuple[int, int]:
    """``22`` or ``8000:8080``."""
    low, sep, high = text.partition(":")
    try:
        first = int(low)
        last = int(high) if sep else first
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not PORT or MIN:MAX", param_hint="--port") from None
    return first, last


def _rule_row(rule: dict[str, Any]) -> dict[str, Any]:
    low, high = rule["port_range_min"], rule["port_range_max"]
    ports = "" if low is None else (str(low) if low == high else f"{low}:{high}")
    remote = rule["remote_ip_prefix"] or (
        f"group {rule['remote_group_id']}" if rule["remote_group_id"] else "any"
    )
    return {**rule, "protocol": rule["protocol"] or "any", "ports": ports, "remote": remote}


def _rule_text(rule: dict[str, Any]) -> str:
    row = _rule_row(rule)
    ports = f" {row['ports']}" if row["ports"] else ""
    return f"{row['direction']} {row['ethertype']} {row['protocol']}{ports} from {row['remote']}"


def _render(group: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.json:
        render_one(group, fmt)
        return
    shown = {**group, "rules": [_rule_text(r) for r in group["security_group_rules"]]}
    render_one(shown, fmt, FIELDS)


@app.command("create")
def group_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    fmt: FormatOption = Format.table,
) -> None:
    """Create a security group (it starts with no rules: nothing may reach its ports)."""
    body = {"name": name, "description": description}
    _render(api(ctx).post(path("security-groups"), json=body), fmt)


@app.command("list")
def group_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only the group with this name.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Your project's security groups."""
    rows = api(ctx).list_all(path("security-groups"), "security_groups", {"name": name})
    if fmt is Format.table:
        rows = [{**r, "rule_count": len(r["security_group_rules"])} for r in rows]
    render_list(rows, COLUMNS, fmt)


@app.command("show")
def group_show(ctx: typer.Context, group: GroupArgument, fmt: FormatOption = Format.table) -> None:
    """Show a security group and its rules."""
    _render(api(ctx).get(path("security-groups", group)), fmt)


@app.command("set")
def group_set(
    ctx: typer.Context,
    group: GroupArgument,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Rename a security group or change its description."""
    changes = {k: v for k, v in {"name": name, "description": description}.items() if v is not None}
    if not changes:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    _render(api(ctx).patch(path("security-groups", group), json=changes), fmt)


@app.command("delete")
def group_delete(
    ctx: typer.Context,
    groups: Annotated[list[str], typer.Argument(help="Security group ids or names.")],
) -> None:
    """Delete security groups (not `default`, not while ports use them)."""
    client = api(ctx)
    for group in groups:
        client.delete(path("security-groups", group))
        say(f"deleted security group {group}")


@rule_app.command("create")
def rule_create(
    ctx: typer.Context,
    group: GroupArgument,
    direction: Annotated[Direction, typer.Option(help="ingress or egress.")] = Direction.ingress,
    ethertype: Annotated[Ethertype, typer.Option(help="IPv4 or IPv6.")] = Ethertype.ipv4,
    protocol: Annotated[
        str | None, typer.Option(help="tcp, udp, icmp, icmpv6, any or a number (default: any).")
    ] = None,
    port: Annotated[
        str | None,
        typer.Option("--port", help="PORT or MIN:MAX (tcp and udp).", show_default=False),
    ] = None,
    remote_ip: Annotated[
        str | None, typer.Option("--remote-ip", help="Only from/to this CIDR.", show_default=False)
    ] = None,
    remote_group: Annotated[
        str | None,
        typer.Option("--remote-group", help="Only from/to this group's ports.", show_default=False),
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    fmt: FormatOption = Format.table,
) -> None:
    """Add an allow rule to a security group."""
    if remote_ip and remote_group:
        raise typer.BadParameter("give --remote-ip or --remote-group, not both")
    body: dict[str, Any] = {
        "security_group_id": group,
        "direction": direction.value,
        "ethertype": ethertype.value,
        "protocol": protocol,
        "remote_ip_prefix": remote_ip,
        "remote_group_id": remote_group,
        "description": description,
    }
    if port is not None:
        body["port_range_min"], body["port_range_max"] = parse_ports(port)
    rule = api(ctx).post(path("security-group-rules"), json=body)
    if fmt is Format.json:
        render_one(rule, fmt)
    else:
        render_one(_rule_row(rule), fmt, [*RULE_COLUMNS, ("security_group_id", "Group")])


@rule_app.command("list")
def rule_list(ctx: typer.Context, group: GroupArgument, fmt: FormatOption = Format.table) -> None:
    """A security group's rules."""
    rows = api(ctx).list_all(
        path("security-group-rules"), "security_group_rules", {"security_group_id": group}
    )
    render_list([_rule_row(r) for r in rows] if fmt is Format.table else rows, RULE_COLUMNS, fmt)


@rule_app.command("delete")
def rule_delete(
    ctx: typer.Context, rules: Annotated[list[str], typer.Argument(help="Rule ids.")]
) -> None:
    """Delete rules."""
    client = api(ctx)
    for rule in rules:
        client.delete(path("security-group-rules", rule))
        say(f"deleted security group rule {rule}")
