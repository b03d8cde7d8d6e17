"""``nubes server``: instances. Create, start, stop, reboot and delete answer at once (the API
says 202); ``--wait`` polls each server until it settles and shows its progress.

Waiting is polling, never trust in a single answer: a server is settled when it reaches the
target state with no task left, goes to ``error`` (its ``reason`` is printed, exit 1) or
disappears. The live display goes to stderr, so ``-f json`` output on stdout stays parseable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from nubes.cli.client import ApiClient, api, path
from nubes.cli.errors import ApiError, CliError
from nubes.cli.flavor import PropertyOption, parse_properties
from nubes.cli.output import (
    Column,
    Format,
    FormatOption,
    console,
    note,
    print_json,
    render_list,
    render_one,
    say,
)

app = typer.Typer(help="Servers: virtual machines and system containers.", no_args_is_help=True)

#: How often ``--wait`` asks for each server's state.
POLL_SECONDS = 0.5
DEFAULT_TIMEOUT = 600

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("state", "State"),
    ("task", "Task"),
    ("flavor", "Flavor"),
    ("image", "Image"),
]
HOST_COLUMN: Column = ("host", "Host")
FIELDS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("state", "State"),
    ("task", "Task"),
    ("reason", "Reason"),
    ("desired_power", "Desired power"),
    ("observed_power", "Observed power"),
    ("flavor", "Flavor"),
    ("vcpus", "VCPUs"),
    ("ram_mb", "RAM (MB)"),
    ("disk_gb", "Disk (GB)"),
    ("image", "Image"),
    ("image_kind", "Image kind"),
    ("keypair_name", "Keypair"),
    ("metadata", "Properties"),
    ("console", "Console"),
    ("project_id", "Project"),
    ("user_id", "User"),
    ("created_at", "Created"),
    ("updated_at", "Updated"),
    ("launched_at", "Launched"),
    ("task_deadline", "Task deadline"),
]

ServerArgument = Annotated[str, typer.Argument(help="Server id or name.")]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Wait until the server settles; exit 1 if it fails.")
]
TimeoutOption = Annotated[
    int, typer.Option("--timeout", min=1, help="Give up waiting after this many seconds.")
]
STATE_STYLES = {"running": "green", "stopped": "yellow", "error": "red", "deleted": "dim"}


# names for people ------------------------------------------------------------------------------


def _names(client: ApiClient, collection: str) -> dict[str, str]:
    """id → name of the flavors, images or hosts the caller may list; empty when it may not."""
    try:
        return {r["id"]: r["name"] for r in client.list_all(path(collection), collection)}
    except ApiError as exc:
        if exc.status in (403, 404):
            return {}
        raise


def _with_names(client: ApiClient, servers: list[dict[str, Any]]) -> bool:
    """Add flavor, image and (for cloud admins, who see ``host_id``) host names to the rows;
    returns whether any row has a host to show."""
    flavors, images = _names(client, "flavors"), _names(client, "images")
    placed = any(s.get("host_id") for s in servers)
    hosts = _names(client, "hosts") if placed else {}
    for server in servers:
        server["flavor"] = flavors.get(server["flavor_id"], server["flavor_id"])
        server["image"] = images.get(server["image_id"], server["image_id"])
        host_id = server.get("host_id")
        server["host"] = hosts.get(host_id, host_id) if host_id else None
    return placed


def _render_servers(client: ApiClient, servers: list[dict[str, Any]], fmt: Format) -> None:
    if fmt is Format.json:
        print_json(servers)
        return
    placed = _with_names(client, servers)
    render_list(servers, [*COLUMNS, HOST_COLUMN] if placed else COLUMNS, fmt)


def _render_server(client: ApiClient, server: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.json:
        print_json(server)
        return
    placed = _with_names(client, [server])
    render_one(server, fmt, [*FIELDS[:8], HOST_COLUMN, *FIELDS[8:]] if placed else FIELDS)


# waiting ---------------------------------------------------------------------------------------


def _describe(server: Mapping[str, Any]) -> str:
    task = f" (task {server['task']})" if server.get("task") else ""
    return f"{server['state']}{task}"


def _settled(server: Mapping[str, Any], target: str) -> bool:
    state = server["state"]
    return state in ("error", "deleted") or (state == target and server.get("task") is None)


def _fetch(client: ApiClient, server: Mapping[str, Any]) -> dict[str, Any]:
    """The server now; a server that is gone is reported as ``deleted``."""
    try:
        found: dict[str, Any] = client.get(path("servers", server["id"]))
    except ApiError as exc:
        if exc.status != 404:
            raise
        return {**server, "state": "deleted", "task": None}
    return found


class _Progress:
    """Each server's state while waiting: a live table with spinners on a terminal, a line
    per change otherwise (logs, CI, tests)."""

    def __init__(self, servers: list[dict[str, Any]], target: str) -> None:
        self.servers = servers
        self.target = target
        self.started = time.monotonic()
        self.spinners = {s["id"]: Spinner("dots", style="cyan") for s in servers}
        self.shown: dict[str, str] = {}
        self.console = console(stderr=True)
        self.live: Live | None = None

    def _mark(self, server: Mapping[str, Any]) -> Text | Spinner:
        if not _settled(server, self.target):
            return self.spinners[server["id"]]
        if server["state"] == self.target:
            return Text("✔", style="green")
        return Text("✘", style="red")

    def __rich__(self) -> Group:
        grid = Table.grid(padding=(0, 1))
        for server in self.servers:
            state = Text(server["state"], style=STATE_STYLES.get(server["state"], "cyan"))
            task = Text(f"task {server['task']}" if server.get("task") else "", style="dim")
            failed = server["state"] == "error"
            reason = Text((server.get("reason") or "") if failed else "", style="red")
            grid.add_row(self._mark(server), Text(server["name"]), state, task, reason)
        elapsed = time.monotonic() - self.started
        waiting = not all(_settled(s, self.target) for s in self.servers)
        footer = f"waiting for {self.target}" if waiting else "settled"
        return Group(grid, Text(f"{footer} ({elapsed:.0f} s)", style="dim"))

    @contextmanager
    def shown_live(self) -> Iterator[_Progress]:
        if not self.console.is_terminal:
            self.update(self.servers)
            yield self
            return
        with Live(self, console=self.console, refresh_per_second=10, transient=False) as live:
            self.live = live
            yield self

    def update(self, servers: list[dict[str, Any]]) -> None:
        self.servers = servers
        if self.live is not None:
            self.live.refresh()
            return
        for server in servers:
            line = _describe(server)
            if self.shown.get(server["id"]) != line:
                self.shown[server["id"]] = line
                note(f"{server['name']}: {line}")


def wait_for(
    client: ApiClient, servers: list[dict[str, Any]], target: str, timeout: int
) -> list[dict[str, Any]]:
    """Poll until every server is settled (see :func:`_settled`) and return them; a timeout
    is a :class:`CliError` that says where each unsettled server is stuck."""
    deadline = time.monotonic() + timeout
    current = list(servers)
    with _Progress(current, target).shown_live() as progress:
        while not all(_settled(s, target) for s in current):
            if time.monotonic() >= deadline:
                stuck = "; ".join(
                    f"{s['name']} is still {_describe(s)}"
                    for s in current
                    if not _settled(s, target)
                )
                raise CliError(
                    f"gave up after {timeout} s waiting for {target}: {stuck} "
                    "(nubes server show NAME; a longer --timeout may help)"
                )
            time.sleep(POLL_SECONDS)
            current = [s if _settled(s, target) else _fetch(client, s) for s in current]
            progress.update(current)
    return current


def _failures(servers: list[dict[str, Any]], target: str) -> CliError | None:
    failed = [s for s in servers if s["state"] != target]
    if not failed:
        return None
    reasons = []
    for server in failed:
        if server["state"] == "error":
            reasons.append(f"server {server['name']} went to error: {server.get('reason') or '?'}")
        else:
            reasons.append(f"server {server['name']} is {server['state']}, not {target}")
    return CliError("; ".join(reasons))


# commands --------------------------------------------------------------------------------------


def _read_user_data(file: Path) -> str:
    try:
        return file.expanduser().read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"the user data {file} is not UTF-8 text") from exc
    except OSError as exc:
        raise CliError(f"cannot read the user data {file}: {exc.strerror}") from exc


@app.command("create")
def server_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Server name (with --count: NAME-1, NAME-2, …).")],
    image: Annotated[str, typer.Option(help="Image id or name.")],
    flavor: Annotated[str, typer.Option(help="Flavor id or name.")],
    key_name: Annotated[
        str | None, typer.Option("--key-name", help="Put this keypair's public key in it.")
    ] = None,
    user_data: Annotated[
        Path | None, typer.Option("--user-data", help="A cloud-init user-data file.")
    ] = None,
    properties: PropertyOption = None,
    count: Annotated[int, typer.Option(min=1, max=100, help="How many.")] = 1,
    zone: Annotated[
        str | None, typer.Option("--zone", help="Only on hosts of this availability zone.")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="Server group (affinity, anti-affinity, soft-…) to join."),
    ] = None,
    requirements: Annotated[
        str | None,
        typer.Option(
            "--requirements",
            help='Hosts must satisfy this: FREE_CPU > 60 & HYPERVISOR = "qemu".',
        ),
    ] = None,
    rank: Annotated[
        str | None,
        typer.Option("--rank", help="Prefer hosts where this is highest: FREE_MEMORY."),
    ] = None,
    config_drive: Annotated[
        bool, typer.Option("--config-drive", help="Attach a config drive (label config-2).")
    ] = False,
    network: Annotated[
        list[str] | None,
        typer.Option(
            "--network",
            help="A NIC on this network (repeat for several; NET=IP for a fixed address).",
        ),
    ] = None,
    port: Annotated[
        list[str] | None, typer.Option("--port", help="A NIC on this port made beforehand.")
    ] = None,
    no_network: Annotated[bool, typer.Option("--no-network", help="No NIC at all.")] = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    fmt: FormatOption = Format.table,
) -> None:
    """Create servers; with --wait, until they run (exit 1 if one goes to error)."""
    body: dict[str, Any] = {
        "name": name,
        "image": image,
        "flavor": flavor,
        "metadata": parse_properties(properties),
        "count": count,
    }
    optional = {
        "availability_zone": zone,
        "group": group,
        "requirements": requirements,
        "rank": rank,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if config_drive:
        body["config_drive"] = True
    nics: list[dict[str, str]] = []
    for item in network or []:
        name, _, address = item.partition("=")
        nics.append({"network": name, **({"fixed_ip": address} if address else {})})
    nics += [{"port": p} for p in port or []]
    if no_network and nics:
        raise CliError("--no-network and --network/--port: choose one")
    if nics:
        body["networks"] = nics
    elif no_network:
        body["networks"] = "none"
    if key_name is not None:
        body["keypair"] = key_name
    if user_data is not None:
        body["user_data"] = _read_user_data(user_data)
    client = api(ctx)
    servers: list[dict[str, Any]] = client.post(path("servers"), json=body)["servers"]
    failure = None
    if wait:
        servers = wait_for(client, servers, "running", timeout)
        failure = _failures(servers, "running")
    if count == 1:
        _render_server(client, servers[0], fmt)
    else:
        _render_servers(client, servers, fmt)
    if failure is not None:
        raise failure


@app.command("list")
def server_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only servers with this name.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only servers in this state (running, error, …).")
    ] = None,
    all_projects: Annotated[
        bool, typer.Option("--all-projects", help="Cloud admins: every project's.")
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """List servers (your project's)."""
    client = api(ctx)
    params = {"name": name, "status": status, "all_projects": all_projects or None}
    _render_servers(client, client.list_all(path("servers"), "servers", params), fmt)


@app.command("show")
def server_show(
    ctx: typer.Context, server: ServerArgument, fmt: FormatOption = Format.table
) -> None:
    """Show a server (with the reason when it is in error)."""
    client = api(ctx)
    _render_server(client, client.get(path("servers", server)), fmt)


def _act(
    ctx: typer.Context,
    server: str,
    action: str,
    target: str,
    doing: str,
    *,
    wait: bool,
    timeout: int,
    fmt: Format,
) -> None:
    client = api(ctx)
    acted: dict[str, Any] = client.post(path("servers", server, "action"), json={"action": action})
    if not wait:
        if fmt is Format.json:
            print_json(acted)
        else:
            say(f"{doing} server {acted['name']}")
        return
    (settled,) = wait_for(client, [acted], target, timeout)
    failure = _failures([settled], target)
    if failure is not None:
        raise failure
    if fmt is Format.json:
        print_json(settled)
    else:
        say(f"server {settled['name']} is {target}")


@app.command("start")
def server_start(
    ctx: typer.Context,
    server: ServerArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    fmt: FormatOption = Format.table,
) -> None:
    """Start a stopped server."""
    _act(ctx, server, "start", "running", "starting", wait=wait, timeout=timeout, fmt=fmt)


@app.command("stop")
def server_stop(
    ctx: typer.Context,
    server: ServerArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    fmt: FormatOption = Format.table,
) -> None:
    """Stop a running server."""
    _act(ctx, server, "stop", "stopped", "stopping", wait=wait, timeout=timeout, fmt=fmt)


@app.command("reboot")
def server_reboot(
    ctx: typer.Context,
    server: ServerArgument,
    hard: Annotated[
        bool, typer.Option("--hard", help="Reset it, rather than ask the guest to reboot.")
    ] = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    fmt: FormatOption = Format.table,
) -> None:
    """Reboot a running server."""
    action = "reboot_hard" if hard else "reboot"
    doing = "hard rebooting" if hard else "rebooting"
    _act(ctx, server, action, "running", doing, wait=wait, timeout=timeout, fmt=fmt)


@app.command("delete")
def server_delete(
    ctx: typer.Context,
    servers: Annotated[list[str], typer.Argument(help="Server ids or names.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until they are gone; exit 1 if one fails.")
    ] = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Delete servers (in any state, even busy ones)."""
    client = api(ctx)
    deleting = []
    for server in servers:
        deleting.append(client.delete(path("servers", server)))
        say(f"deleting server {server}")
    if not wait:
        return
    settled = wait_for(client, deleting, "deleted", timeout)
    for gone in settled:
        if gone["state"] == "deleted":
            say(f"deleted server {gone['name']}")
    failure = _failures(settled, "deleted")
    if failure is not None:
        raise failure


# Terminal control sequences (CSI, OSC and two-byte escapes) a guest may print; a console log
# must never drive the reader's terminal.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")


def printable_log(log: str) -> str:
    text = _ESCAPES.sub("", log).replace("\r\n", "\n")
    return "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)


def _tail(text: str, lines: int | None) -> str:
    return text if lines is None else "\n".join(text.splitlines()[-lines:])


@app.command("console")
def server_console(
    ctx: typer.Context,
    server: ServerArgument,
    lines: Annotated[
        int | None, typer.Option(min=1, help="Only the last N lines.", show_default=False)
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Print the server's console log (the last 64 KiB the host reported)."""
    log: str = api(ctx).get(path("servers", server, "console"))["log"]
    if fmt is Format.json:
        print_json({"log": _tail(log, lines)})
        return
    text = _tail(printable_log(log), lines)
    if text:
        typer.echo(text.rstrip("\n"))
