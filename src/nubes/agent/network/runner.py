"""How the data plane touches the host: every command goes through :func:`nubes.subp.subp`
(logged, bounded in time, failures typed), behind the small :class:`Run` callable that unit
tests replace with a fake recording commands and answering reads.

What is read back is iproute2's ``-json`` output (a machine interface, not screen text) and,
for our own nftables tables, one comment line. Netlink from Python (pyroute2) would avoid the
processes, but one path for every change keeps the logs, the timeouts and the fakes uniform,
and the agent runs a handful of commands per pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from nubes.subp import SubpResult, subp

#: No single ip/bridge/nft command should take long; a wedged one must not stall the agent.
COMMAND_TIMEOUT = 30.0


class NetworkError(Exception):
    """A host change could not be made; the message names the object and why."""


class Run(Protocol):
    def __call__(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        ok_codes: Sequence[int] = (0,),
    ) -> SubpResult: ...


def host_run(
    args: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    ok_codes: Sequence[int] = (0,),
) -> SubpResult:
    return subp(args, check=check, input=input, ok_codes=ok_codes, timeout=COMMAND_TIMEOUT)


def run_json(run: Run, args: Sequence[str]) -> Any:
    """A command's JSON answer; iproute2 prints nothing at all for an empty list."""
    out = run(args).stdout.strip()
    if not out:
        return []
    try:
        return json.loads(out)
    except ValueError as exc:
        raise NetworkError(f"`{' '.join(args)}` did not answer JSON: {out[:200]!r}") from exc
