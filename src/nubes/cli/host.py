"""``nubes host`` and ``nubes service`` (cloud admins): join tokens for new compute nodes,
the hosts that joined, and whether every controller loop and agent is up.

A join token is a secret shown once: ``host token create`` prints it with the command to run
on the new node, built from the URL this CLI talks to.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from nubes.cli.client import api, path
from nubes.cli.credentials import parse_timestamp
from nubes.cli.output import (
    Column,
    Format,
    FormatOption,
    cell,
    console,
    print_json,
    render_list,
    render_one,
    say,
    warn,
)

app = typer.Typer(help="Compute hosts (cloud admins).", no_args_is_help=True)
token_app = typer.Typer(help="Join tokens: let a new node join the cloud.", no_args_is_help=True)
app.add_typer(token_app, name="token")
service_app = typer.Typer(
    help="Services: controller loops and agents, up or down.", no_args_is_help=True
)

COLUMNS: list[Column] = [
    ("name", "Name"),
    ("state", "State"),
    ("enabled", "Enabled"),
    ("driver", "Driver"),
    ("vcpus_used", "vCPUs used/total"),
    ("ram_used", "RAM used/total MB"),
    ("seen", "Last seen"),
]
FIELDS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("state", "State"),
    ("error", "Error"),
    ("enabled", "Enabled"),
    ("disabled_reason", "Disabled because"),
    ("address", "Address"),
    ("driver", "Driver"),
    ("arch", "Arch"),
    ("vcpus_used", "vCPUs used/total"),
    ("ram_used", "RAM used/total MB"),
    ("disk_used", "Disk used/total GB"),
    ("capabilities", "Capabilities"),
    ("metrics_age", "Metrics from"),
    ("seen", "Last seen"),
    ("created_at", "Created"),
]
TOKEN_FIELDS: list[Column] = [
    ("token", "Token"),
    ("id", "ID"),
    ("uses", "Uses"),
    ("expires_at", "Expires"),
]

HostArgument = Annotated[str, typer.Argument(help="Host id or name.")]

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> int:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d`` → seconds."""
    match = _DURATION.match(value.strip().lower())
    if match is None:
        raise typer.BadParameter(
            f"{value!r} is not a duration: SECONDS, or a number with s, m, h or d (30m, 1h, 2d)",
            param_hint="--expires",
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def ago(value: str | None, now: datetime | None = None) -> str:
    """An API timestamp as people read it: ``4 s ago``, ``3 min ago``; empty for never."""
    if not value:
        return ""
    try:
        seconds = ((now or datetime.now(UTC)) - parse_timestamp(value)).total_seconds()
    except ValueError:
        return value
    seconds = max(seconds, 0)
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds / 86400:.0f} d ago"


def _for_people(host: dict[str, Any]) -> dict[str, Any]:
    return {
        **host,
        "vcpus_used": f"{host['allocated_vcpus']}/{host['vcpus']}",
        "ram_used": f"{host['allocated_ram_mb']}/{host['ram_mb']}",
        "disk_used": f"{host['allocated_disk_gb']}/{host['disk_gb']}",
        "seen": ago(host.get("last_seen")),
        "metrics_age": ago(host.get("metrics_at")),
    }


# join tokens -----------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    uses: Annotated[int, typer.Option(min=1, help="How many nodes may join with it.")] = 1,
    expires: Annotated[
        str, typer.Option(help="Valid for SECONDS, or 30m, 1h, 2d (1 min to 30 days).")
    ] = "1h",
    fmt: FormatOption = Format.table,
) -> None:
    """Make a join token and print how a new node uses it."""
    body = {"uses": uses, "expires_seconds": parse_duration(expires)}
    client = api(ctx)
    made = client.post(path("host-tokens"), json=body)
    if fmt is Format.json:
        print_json(made)
        return
    render_one(made, fmt, TOKEN_FIELDS)
    say("on the new node, run:")
    typer.echo(f"  nubes agent join {client.url} --token {made['token']}")
    warn("the token is shown once; anyone holding it can join a node until it expires")


# hosts -----------------------------------------------------------------------------------------


@app.command("list")
def host_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only the host with this name.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List the compute hosts with what is allocated on them."""
    hosts = api(ctx).list_all(path("hosts"), "hosts", {"name": name})
    if fmt is Format.json:
        print_json(hosts)
        return
    render_list([_for_people(h) for h in hosts], COLUMNS, fmt)


@app.command("show")
def host_show(ctx: typer.Context, host: HostArgument, fmt: FormatOption = Format.table) -> None:
    """Show a host: capacity, allocations, capabilities, last metrics."""
    shown = api(ctx).get(path("hosts", host))
    if fmt is Format.json:
        print_json(shown)
        return
    render_one(_for_people(shown), fmt, FIELDS)
    _print_scheduling(shown)
    _print_monitoring(shown)


def _print_monitoring(host: dict[str, Any]) -> None:
    """The metrics as a sorted Name/Value table, then each failing probe with its error."""
    metrics = host.get("metrics") or {}
    if metrics:
        table = Table(title="Metrics", show_lines=False)
        table.add_column("Name")
        table.add_column("Value", justify="right", overflow="fold")
        for name, value in sorted(metrics.items()):
            table.add_row(Text(name), Text(cell(value)))
        console().print(table)
    errors = host.get("probe_errors") or {}
    if errors:
        table = Table(title="Probe errors", show_lines=False)
        table.add_column("Probe")
        table.add_column("Error", overflow="fold")
        for name, message in sorted(errors.items()):
            table.add_row(Text(name), Text(cell(message), style="red"))
        console().print(table)


@app.command("sync")
def host_sync(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """Send the probes in the controller's STATE_DIR/probes/{common,qemu,lxc,fake}/ to every
    host; agents install them at their next heartbeat (docs/probes.md)."""
    synced = api(ctx).post(path("hosts", "sync"))
    if fmt is Format.json:
        print_json(synced)
        return
    render_list([{"probe": name} for name in synced["probes"]], [("probe", "Probe")], fmt)
    news = "new version" if synced["changed"] else "unchanged"
    say(f"probes version {synced['version'][:12]} ({news}): {len(synced['probes'])} probe(s)")


def _set_enabled(ctx: typer.Context, host: str, enabled: bool, reason: str, fmt: Format) -> None:
    changed = api(ctx).patch(path("hosts", host), json={"enabled": enabled, "reason": reason})
    if fmt is Format.json:
        print_json(changed)
    elif enabled:
        say(f"enabled host {changed['name']}: it takes new servers")
    else:
        why = f" ({reason})" if reason else ""
        say(f"disabled host {changed['name']}{why}: it keeps its servers but gets no new ones")


@app.command("enable")
def host_enable(ctx: typer.Context, host: HostArgument, fmt: FormatOption = Format.table) -> None:
    """Let a host take new servers again."""
    _set_enabled(ctx, host, True, "", fmt)


@app.command("disable")
def host_disable(
    ctx: typer.Context,
    host: HostArgument,
    reason: Annotated[str, typer.Option(help="Why (shown in host and service lists).")] = "",
    fmt: FormatOption = Format.table,
) -> None:
    """Stop placing new servers on a host; the ones on it keep running."""
    _set_enabled(ctx, host, False, reason, fmt)


def _print_scheduling(host: dict[str, Any]) -> None:
    """The effective zone, ratios and cap, each with where it comes from."""
    scheduling = host.get("scheduling")
    if not scheduling:
        return
    sources = scheduling.get("sources", {})
    table = Table(title="Scheduling", show_lines=False)
    for heading in ("Setting", "Value", "From"):
        table.add_column(heading, overflow="fold")
    table.add_row(Text("Availability zone"), Text(cell(scheduling["availability_zone"])), Text())
    table.add_row(Text("Aggregates"), Text(cell(scheduling["aggregates"])), Text())
    table.add_row(Text("Aggregate properties"), Text(cell(scheduling["metadata"])), Text())
    for key, label in SCHEDULING_SETTINGS:
        value = scheduling.get(key)
        shown = "no cap" if value is None else cell(value)
        table.add_row(Text(label), Text(shown), Text(cell(sources.get(key))))
    console().print(table)


SCHEDULING_SETTINGS = (
    ("cpu_allocation_ratio", "CPU allocation ratio"),
    ("ram_allocation_ratio", "RAM allocation ratio"),
    ("disk_allocation_ratio", "Disk allocation ratio"),
    ("max_instances", "Max instances"),
)
Ratio = Annotated[
    float | None,
    typer.Option(help="Override (> 0, ≤ 1000).", show_default=False),
]


@app.command("set")
def host_set(
    ctx: typer.Context,
    host: HostArgument,
    cpu_ratio: Ratio = None,
    ram_ratio: Ratio = None,
    disk_ratio: Ratio = None,
    max_instances: Annotated[
        int | None, typer.Option(help="At most this many instances (≥ 1).", show_default=False)
    ] = None,
    clear_ratios: Annotated[
        bool, typer.Option("--clear-ratios", help="Inherit the three ratios again.")
    ] = False,
    clear_max_instances: Annotated[
        bool, typer.Option("--clear-max-instances", help="Inherit the instance cap again.")
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Override a host's allocation ratios or instance cap (else its aggregates', else the
    cloud's defaults)."""
    ratios = {
        "cpu_allocation_ratio": cpu_ratio,
        "ram_allocation_ratio": ram_ratio,
        "disk_allocation_ratio": disk_ratio,
    }
    if clear_ratios and any(v is not None for v in ratios.values()):
        raise typer.BadParameter("--clear-ratios clears them all: give no ratio with it")
    if clear_max_instances and max_instances is not None:
        raise typer.BadParameter("give --max-instances or --clear-max-instances, not both")
    changes: dict[str, Any] = {k: v for k, v in ratios.items() if v is not None or clear_ratios}
    if max_instances is not None or clear_max_instances:
        changes["max_instances"] = max_instances
    if not changes:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    changed = api(ctx).patch(path("hosts", host), json=changes)
    if fmt is Format.json:
        print_json(changed)
        return
    render_one(_for_people(changed), fmt, FIELDS)
    _print_scheduling(changed)


@app.command("delete")
def host_delete(
    ctx: typer.Context, hosts: Annotated[list[str], typer.Argument(help="Host ids or names.")]
) -> None:
    """Forget hosts that have no servers (their agents must join again)."""
    client = api(ctx)
    for host in hosts:
        client.delete(path("hosts", host))
        say(f"deleted host {host}")


# services --------------------------------------------------------------------------------------


def _state(state: str) -> Text:
    # nova-manage service list's faces, with the word for those who do not read them.
    if state == "up":
        return Text(":-) up", style="green")
    if state == "down":
        return Text("XXX down", style="red")
    return Text(state)


@service_app.command("list")
def service_list(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """The controller's loops and every host's agent, each up or down."""
    services = api(ctx).get(path("services"))["services"]
    if fmt is Format.json:
        print_json(services)
        return
    table = Table(show_lines=False)
    for heading in ("Name", "Host", "Kind", "State", "Last seen", "Detail"):
        table.add_column(heading, overflow="fold")
    for service in services:
        table.add_row(
            Text(cell(service["name"])),
            Text(cell(service["host"])),
            Text(cell(service["kind"])),
            _state(service["state"]),
            Text(ago(service.get("last_seen"))),
            Text(cell(service.get("detail"))),
        )
    console().print(table)
