"""Every command nubes runs to completion goes through :func:`subp` (cloud-init's idea): one
place that logs, applies a timeout, and turns failure into a typed :class:`SubpError` carrying
the command, exit code and output. The only other uses of ``subprocess`` start long-running
daemons of our own (the controller and the local agent in ``nubes.controller.process``)."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("nubes.subp")


@dataclass(frozen=True)
class SubpResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class SubpError(Exception):
    """A command failed (non-zero exit, not found, or timed out)."""

    def __init__(
        self,
        args: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        reason: str = "",
    ) -> None:
        self.cmd = tuple(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason or f"exited with code {returncode}"
        tail = (stderr or stdout).strip().splitlines()[-5:]
        detail = ("; " + " | ".join(tail)) if tail else ""
        super().__init__(f"`{shlex.join(self.cmd)}` {self.reason}{detail}")


def subp(
    args: Sequence[str | Path],
    *,
    check: bool = True,
    timeout: float | None = 120.0,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ok_codes: Sequence[int] = (0,),
) -> SubpResult:
    """Run ``args`` (never through a shell) and return its output as text."""
    argv = tuple(str(a) for a in args)
    log.debug("running %s", shlex.join(argv))
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            argv,
            input=data,
            capture_output=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SubpError(argv, None, reason="not found (is its package installed?)") from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise SubpError(argv, None, out, err, reason=f"timed out after {timeout} s") from exc
    result = SubpResult(
        argv,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and proc.returncode not in ok_codes:
        raise SubpError(argv, proc.returncode, result.stdout, result.stderr)
    return result


def which(name: str) -> str | None:
    import shutil

    return shutil.which(name)
