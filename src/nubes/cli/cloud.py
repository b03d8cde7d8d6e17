"""The cloud itself: ``nubes up``, ``down`` and ``status`` (the local controller process, through
:mod:`nubes.controller`), and ``login`` / ``logout`` (the login file).

The controller's own modules (bootstrap, server) pull in the whole stack, so they are imported
only by the command that needs them: every other command starts fast.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from nubes.cli.client import ApiClient, anonymous, connect, global_options, path
from nubes.cli.credentials import (
    OPENRC_FILE,
    GlobalOptions,
    Session,
    load_session,
    parse_timestamp,
    read_openrc,
    remove_session,
    resolve,
    save_session,
    session_path,
)
from nubes.cli.credentials import (
    state_dir as client_state_dir,
)
from nubes.cli.errors import ApiError, CliError
from nubes.cli.output import Format, FormatOption, console, print_json, say, warn
from nubes.config import Settings, load_settings
from nubes.controller import process

CLOUDS_FILE = "clouds.yaml"

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="The cloud's state directory (default: NUBES_STATE_DIR, else ~/.local/share/nubes "
        "or /var/lib/nubes for root).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    for name, command in (
        ("up", up),
        ("down", down),
        ("status", status),
        ("login", login),
        ("logout", logout),
    ):
        app.command(name)(command)


# up / down -------------------------------------------------------------------------------------


def _local_url(settings: Settings) -> str:
    """Where the local controller answers: the URL written to admin-openrc.sh by the last
    `nubes up` (its --port is not in nubes.toml), else the configured one."""
    try:
        url = read_openrc(settings.state_dir / OPENRC_FILE).get("NUBES_URL")
    except OSError:
        url = None
    return (url or settings.effective_public_url).rstrip("/")


def _show_usage(settings: Settings, url: str) -> None:
    state = settings.state_dir
    openrc, clouds = state / OPENRC_FILE, state / CLOUDS_FILE
    out = console()
    out.print(Text.assemble(("URL            ", "bold"), url))
    out.print(Text.assemble(("admin openrc   ", "bold"), str(openrc)))
    out.print(Text.assemble(("clouds.yaml    ", "bold"), str(clouds), " (cloud: nubes)"))
    out.print(Text("Use them:", style="bold"))
    out.print(Text(f"  source {shlex.quote(str(openrc))}"))
    out.print(Text("  nubes status"))
    out.print(Text(f"  export OS_CLIENT_CONFIG_FILE={shlex.quote(str(clouds))}  # openstack CLI"))


def up(
    state_dir: StateDirOption = None,
    port: Annotated[
        int | None, typer.Option(help="API port (default 8770).", show_default=False)
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Listen address (default 0.0.0.0).", show_default=False)
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; return once it answers.")
    ] = False,
    agent: Annotated[
        bool,
        typer.Option("--agent/--no-agent", help="Also run a compute agent on this machine."),
    ] = True,
    driver: Annotated[
        str, typer.Option(help="Hypervisor driver of the local agent: auto, qemu, lxc or fake.")
    ] = "auto",
    demo: Annotated[
        bool,
        typer.Option(
            "--demo/--no-demo",
            help="Build and register the tiny image and boot a `demo` instance (first run).",
        ),
    ] = True,
) -> None:
    """Start the cloud: initialise the state directory on first run, then run the controller."""
    from nubes.controller.bootstrap import remember

    remember(state_dir or client_state_dir(), port=port, listen_host=host)
    settings = load_settings(state_dir, port=port, listen_host=host)
    running = process.find(settings)
    if running is not None:
        say(f"the controller is already running in {settings.state_dir} (pid {running.pid})")
        if not running.healthy:
            warn(
                f"it does not answer on {running.url}; see {settings.state_dir / process.LOG_FILE}"
            )
        _show_usage(settings, running.url)
        return
    if process.healthy(settings.effective_public_url):
        say(
            f"a controller already answers on {settings.effective_public_url} "
            "(started in the foreground: no pid file)"
        )
        _show_usage(settings, settings.effective_public_url)
        return

    from nubes.controller.bootstrap import initialise

    result = initialise(settings)
    if result.created:
        say(f"initialised a new cloud in {settings.state_dir}", style="green")
    if detach:
        running = process.start_detached(settings)
        log = settings.state_dir / process.LOG_FILE
        say(f"started the controller (pid {running.pid}); log: {log}")
        if agent:
            _start_local_agent(settings, running.url, driver)
            if demo:
                _ensure_demo(settings, running.url)
        _show_usage(settings, running.url)
        return

    from nubes.controller.server import serve

    _show_usage(settings, settings.effective_public_url)
    say("the controller runs in the foreground; Ctrl-C stops it (or use --detach)")
    serve(settings)


def _start_local_agent(settings: Settings, url: str, driver: str) -> None:
    """The one-machine cloud: an agent beside the controller, joined with a fresh token."""
    if (pid := process.find_agent(settings)) is not None:
        say(f"the local agent is already running (pid {pid})")
        return
    token = None
    if not (process.agent_dir(settings.state_dir) / "agent.json").exists():
        client = connect(
            resolve(GlobalOptions(url=url), {"NUBES_STATE_DIR": str(settings.state_dir)})
        )
        try:
            token = client.post(path("host-tokens"), json={"uses": 1})["token"]
        finally:
            client.http.close()
    pid = process.start_agent_detached(settings, url=url, token=token, driver=driver)
    say(f"started the local agent (pid {pid}); log: {settings.state_dir / process.AGENT_LOG_FILE}")


DEMO_TIMEOUT = 300.0


def _ensure_demo(settings: Settings, url: str) -> None:
    """The first `nubes up` shows a working cloud: the tiny image, and a `demo` instance
    whose console shows its boot marker."""
    import time

    from nubes.cli.image import DiskFormat, register

    client = connect(resolve(GlobalOptions(url=url), {"NUBES_STATE_DIR": str(settings.state_dir)}))
    try:
        if not client.get(path("images"), params={"name": "tiny"})["images"]:
            from nubes.images.tiny import build_tiny, default_cache_dir

            say("building the tiny test image from Debian packages (first run only)")
            with tempfile.TemporaryDirectory(prefix="nubes-tiny-") as workdir:
                built = build_tiny(Path(workdir), cache_dir=default_cache_dir(), progress=say)
                register(
                    client,
                    "tiny",
                    disk=built.disk,
                    rootfs=built.rootfs,
                    disk_format=DiskFormat.qcow2,
                    public=True,
                    properties={},
                )
            say("registered image tiny")
        found = client.get(path("servers"), params={"name": "demo"})["servers"]
        if found:
            server = found[0]
        else:
            body = {"name": "demo", "image": "tiny", "flavor": "m1.tiny"}
            server = client.post(path("servers"), json=body)["servers"][0]
            say(f"booting instance demo ({server['id']})")
        deadline = time.monotonic() + DEMO_TIMEOUT
        marker = ""
        while time.monotonic() < deadline:
            server = client.get(path("servers", server["id"]))
            if server["state"] == "error":
                raise CliError(f"the demo instance failed: {server['reason']}")
            if server["state"] == "running":
                log = client.get(path("servers", server["id"], "console"))["log"]
                marker = next(
                    (line for line in log.splitlines() if "NUBES-TINY-BOOTED" in line), ""
                )
                if marker:
                    break
            time.sleep(0.5)
        if not marker:
            raise CliError(
                f"the demo instance is {server['state']} but its console shows no boot marker "
                f"after {DEMO_TIMEOUT:.0f} s; see `nubes server console demo`"
            )
        say(f"instance demo is running; its console says: {marker.strip()}", style="green")
    finally:
        client.http.close()


def down(state_dir: StateDirOption = None) -> None:
    """Stop the controller and the local agent started with `nubes up --detach`. Instances
    keep running, as on any cloud; the next `nubes up` adopts them."""
    settings = load_settings(state_dir)
    agent_pid = process.stop_agent(settings)
    if agent_pid is not None:
        say(f"stopped the local agent pid {agent_pid} (its instances keep running)")
    had_pid_file = process.pid_file(settings.state_dir).exists()
    pid = process.stop(settings)
    if pid is not None:
        say(f"stopped controller pid {pid}")
        return
    url = _local_url(settings)
    if process.healthy(url):
        raise CliError(
            f"no controller was started with --detach in {settings.state_dir}, but one answers on "
            f"{url}: stop it where it runs (Ctrl-C)"
        )
    stale = " (removed a stale pid file)" if had_pid_file else ""
    say(f"no controller running in {settings.state_dir}{stale}")


# status ----------------------------------------------------------------------------------------


def _local(settings: Settings, problems: list[str]) -> dict[str, Any]:
    state = settings.state_dir
    log = state / process.LOG_FILE
    report: dict[str, Any] = {"state_dir": str(state), "exists": state.is_dir(), "pid": None}
    pid_path = process.pid_file(state)
    running = process.find(settings)
    if running is not None:
        report.update(pid=running.pid, url=running.url, healthy=running.healthy)
        report["summary"] = f"controller pid {running.pid} on {running.url}, " + (
            "healthy" if running.healthy else "NOT answering"
        )
        if not running.healthy:
            problems.append(f"the controller (pid {running.pid}) does not answer; see {log}")
        return report
    if pid_path.exists():
        old = pid_path.read_text().partition("\n")[0].strip()
        problems.append(
            f"stale pid file {pid_path}: the controller (pid {old}) is gone; see {log}, "
            "then `nubes up --detach`"
        )
    url = _local_url(settings)
    if report["exists"] and process.healthy(url):
        report.update(url=url, healthy=True)
        report["summary"] = f"a controller answers on {url} (foreground: no pid file)"
    elif report["exists"]:
        report["summary"] = f"no controller running in {state}"
        problems.append(f"no controller running in {state} — start it with `nubes up --detach`")
    else:
        report["summary"] = f"no cloud in {state} (this is not the head node, or run `nubes up`)"
    return report


def _remote(
    options: GlobalOptions, state: Path, down_url: str | None, problems: list[str]
) -> dict[str, Any] | None:
    """The controller's own report, through the API. ``down_url``: the local controller's
    URL when it is known to be down (asking it again would only repeat that problem)."""
    env = {**os.environ, "NUBES_STATE_DIR": str(state)}
    client: ApiClient | None = None
    try:
        credentials = resolve(options, env)
        if credentials.url.rstrip("/") == down_url:
            return None
        client = connect(credentials)
        me = client.whoami()
        report: dict[str, Any] = {"url": client.url, "user": me["user"]["name"]}
        try:
            report["status"] = client.get(path("status"))
        except ApiError as exc:
            if exc.status != 403:
                raise
            report["status"] = None
            report["healthy"] = process.healthy(client.url)
            if not report["healthy"]:
                problems.append(f"the controller at {client.url} does not answer /healthz")
            return report
        problems.extend(report["status"]["problems"])
        return report
    except CliError as exc:
        problems.append(str(exc))
        return None
    finally:
        if client is not None:
            client.http.close()


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d"] if days else []
    return " ".join([*parts, f"{hours}h", f"{minutes}m", f"{secs}s"])


def _show_status(local: dict[str, Any], remote: dict[str, Any] | None, problems: list[str]) -> None:
    out = console()

    def line(label: str, value: str) -> None:
        out.print(Text.assemble((f"{label:<14} ", "bold"), value), soft_wrap=True)

    line("state dir", local["state_dir"])
    line("local", local["summary"])
    if remote is not None:
        line("controller", f"{remote['url']} (as {remote['user']})")
        info = remote["status"]
        if info is None:
            health = "answers /healthz" if remote.get("healthy") else "does NOT answer /healthz"
            line("", f"{health}; the full report needs a cloud admin")
        else:
            db = info["database"]
            schema = (
                "up to date"
                if db["revision"] == db["head"]
                else f"code expects {db['head']}: run `nubes up`"
            )
            line(
                "version",
                f"{info['version']} (pid {info['pid']}, up {_uptime(info['uptime_seconds'])})",
            )
            line("database", f"{db['engine']} {db['url']}")
            line("schema", f"revision {db['revision']}, {schema}")
            line("counts", ", ".join(f"{k} {v}" for k, v in info["counts"].items()))
    if problems:
        out.print(Text(f"{len(problems)} problem(s):", style="bold red"))
        for problem in problems:
            out.print(Text(f"  - {problem}", style="red"), soft_wrap=True)
    else:
        out.print(Text("all is well", style="bold green"))


def status(
    ctx: typer.Context, state_dir: StateDirOption = None, fmt: FormatOption = Format.table
) -> None:
    """What is running, where, and anything wrong. Exit code 1 when something is."""
    settings = load_settings(state_dir)
    problems: list[str] = []
    local = _local(settings, problems)
    down_url = None if local.get("url") else _local_url(settings)
    remote = _remote(global_options(ctx), settings.state_dir, down_url, problems)
    if fmt is Format.json:
        print_json({"local": local, "remote": remote, "problems": problems, "ok": not problems})
    else:
        _show_status(local, remote, problems)
    if problems:
        raise typer.Exit(1)


# login / logout --------------------------------------------------------------------------------


def _default_url() -> str:
    if os.environ.get("NUBES_URL"):
        return os.environ["NUBES_URL"]
    try:
        url = read_openrc(client_state_dir() / OPENRC_FILE).get("NUBES_URL")
    except OSError:
        url = None
    if not url:
        raise CliError("which cloud? give its URL: nubes login URL")
    return url


def login(
    url: Annotated[
        str | None, typer.Argument(help="Controller URL (default: NUBES_URL or the local cloud).")
    ] = None,
    username: Annotated[
        str | None, typer.Option(help="User name (default: NUBES_USERNAME, else asked).")
    ] = None,
    password: Annotated[str | None, typer.Option(help="Password (default: asked).")] = None,
    project: Annotated[
        str | None, typer.Option(help="Project (default: NUBES_PROJECT, else yours).")
    ] = None,
) -> None:
    """Log in: store a token in ~/.config/nubes/session.json (mode 0600) for later commands."""
    base = (url or _default_url()).rstrip("/")
    if username is None and os.environ.get("NUBES_USERNAME"):
        # A sourced openrc file: its user, and its password unless one is given.
        username = os.environ["NUBES_USERNAME"]
        password = password or os.environ.get("NUBES_PASSWORD")
    username = username or typer.prompt("Username")
    password = password or typer.prompt("Password", hide_input=True)
    project = project or os.environ.get("NUBES_PROJECT") or None
    client = anonymous(base)
    try:
        issued = client.issue_token(username, password, project)
    finally:
        client.http.close()
    session = Session(
        url=base,
        token=str(issued["token"]),
        expires_at=parse_timestamp(str(issued["expires_at"])),
        user=str(issued["user"]["name"]),
        project=str(issued["project"]["name"]),
        path=session_path(),
    )
    saved = save_session(session)
    expires = session.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    say(f"logged in to {base} as {session.user} (project {session.project}) until {expires}")
    say(f"saved the token to {saved} (mode 0600); `nubes logout` revokes it")
    overriding = [v for v in ("NUBES_TOKEN", "NUBES_USERNAME") if os.environ.get(v)]
    if overriding:
        warn(f"{' and '.join(overriding)} in your environment take precedence over this login")


def logout() -> None:
    """Revoke the stored token and delete the login file."""
    try:
        session = load_session()
    except CliError as exc:
        remove_session()
        say(f"removed an unreadable login file ({exc})")
        return
    if session is None:
        say("not logged in")
        return
    client = anonymous(session.url, session.token)
    try:
        client.delete(path("auth", "tokens"))
    except ApiError as exc:
        if exc.status != 401:  # 401: expired or revoked already, which is the goal
            warn(f"could not revoke the token: {exc}")
    except CliError as exc:
        warn(f"could not revoke the token ({exc}); it stays valid until it expires")
    finally:
        client.http.close()
    remove_session()
    say(f"logged out of {session.url}; removed {session.path}")
