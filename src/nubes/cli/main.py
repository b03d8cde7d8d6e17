"""The ``nubes`` typer app: global options, the command groups, and the one place that turns
failures into ``error: …`` on stderr with exit code 1 (usage errors stay typer's, exit 2).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

import nubes
from nubes.cli import (
    agent,
    aggregate,
    cloud,
    flavor,
    host,
    identity,
    image,
    keypair,
    network,
    port,
    quota,
    router,
    security_group,
    server,
    server_group,
    tokens,
    zone,
)
from nubes.cli.credentials import GlobalOptions
from nubes.cli.errors import CliError
from nubes.controller.process import ControllerError
from nubes.domain.errors import NubesError


def _printable(message: str) -> str:
    # Messages may quote what a user typed; never let it drive the terminal.
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in message)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {_printable(message)}", err=True)
    raise typer.Exit(1)


class NubesGroup(TyperGroup):
    """The root group: every command runs inside its ``invoke``, so this catches them all."""

    # typer.Context is what typer passes; the base class names typer's vendored click Context.
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, EOFError):
            raise  # exit codes, Ctrl-C and usage errors: typer reports them
        except (CliError, ControllerError, NubesError) as exc:
            fail(str(exc))
        except Exception as exc:
            if os.environ.get("NUBES_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (NUBES_DEBUG=1 shows the traceback)")


app = typer.Typer(
    name="nubes",
    cls=NubesGroup,
    help="nubes: a private IaaS cloud. Start one with `nubes up`, then manage it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nubes {nubes.__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Controller URL (default: NUBES_URL or the stored one)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Use this token (default: NUBES_TOKEN, then the login)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = GlobalOptions(url=url, token=token)


cloud.register(app)
app.add_typer(identity.user_app, name="user")
app.add_typer(identity.project_app, name="project")
app.add_typer(identity.role_app, name="role")
app.add_typer(tokens.token_app, name="token")
app.add_typer(tokens.credential_app, name="credential")
app.add_typer(quota.app, name="quota")
app.add_typer(agent.app, name="agent")
app.add_typer(flavor.app, name="flavor")
app.add_typer(keypair.app, name="keypair")
app.add_typer(server.app, name="server")
app.add_typer(image.app, name="image")
app.add_typer(host.app, name="host")
app.add_typer(host.service_app, name="service")
app.add_typer(aggregate.app, name="aggregate")
app.add_typer(zone.app, name="zone")
app.add_typer(server_group.app, name="server-group")
app.add_typer(network.app, name="network")
app.add_typer(network.subnet_app, name="subnet")
app.add_typer(port.app, name="port")
app.add_typer(security_group.app, name="security-group")
app.add_typer(router.app, name="router")
app.add_typer(router.fip_app, name="floating-ip")


def main() -> None:
    app()
