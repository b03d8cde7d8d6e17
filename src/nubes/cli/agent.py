"""``nubes agent join URL --token T``: make this machine a compute node and run its agent."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from nubes.cli.errors import CliError
from nubes.cli.output import say

app = typer.Typer(help="The compute agent of this machine.", no_args_is_help=True)


def _default_state_dir() -> Path:
    from nubes.config import default_state_dir

    return default_state_dir() / "agent"


@app.command("join")
def join(
    url: Annotated[str, typer.Argument(help="The controller's URL, e.g. http://head:8770")],
    token: Annotated[str, typer.Option(help="A join token (`nubes host token create`).")],
    driver: Annotated[str, typer.Option(help="auto, qemu, lxc or fake.")] = "auto",
    name: Annotated[str | None, typer.Option(help="Host name (default: node-N).")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Agent state (default: STATE/agent).")
    ] = None,
) -> None:
    """Join the cloud, then keep running as this node's agent (Ctrl-C or SIGTERM stops it;
    instances keep running and are adopted by the next start)."""
    _run(state_dir or _default_state_dir(), url=url, token=token, driver=driver, name=name)


@app.command("run")
def run(
    state_dir: Annotated[
        Path | None, typer.Option(help="Agent state (default: STATE/agent).")
    ] = None,
    driver: Annotated[str, typer.Option(help="auto, qemu, lxc or fake.")] = "auto",
) -> None:
    """Run the agent of a node that has joined already (its identity is in the state dir)."""
    _run(state_dir or _default_state_dir(), url=None, token=None, driver=driver, name=None)


def _run(
    state_dir: Path, *, url: str | None, token: str | None, driver: str, name: str | None
) -> None:
    from nubes.agent.client import ControllerError
    from nubes.agent.hypervisors.base import HypervisorError
    from nubes.agent.run import Agent, AgentError

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        agent = Agent.start(state_dir, url=url, token=token, driver=driver, name=name)
    except (AgentError, ControllerError, HypervisorError) as exc:
        raise CliError(str(exc)) from exc
    say(f"joined as {agent.identity.name} (driver {agent.identity.driver}); running")
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()
