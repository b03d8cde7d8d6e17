"""What the benchmarks share: a free loopback port, and a controller subprocess that is
always stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def stop_cleanly_on_sigterm() -> None:
    """``timeout`` and service managers send SIGTERM: unwind like Ctrl-C, so the controller
    subprocess and temporary directories are removed by their ``finally`` blocks."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def controller(state_dir: Path, database_url: str, log_level: str = "warning") -> Iterator[str]:
    """A controller subprocess; yields its URL, and always stops it (by its PID)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBES_")}
    env.update(NUBES_LOG_LEVEL=log_level, PYTHONUNBUFFERED="1")
    if database_url:
        env["NUBES_DATABASE_URL"] = database_url
    log_path = state_dir / "bench-controller.log"
    argv = [sys.executable, "-m", "nubes.controller.run", "--state-dir", str(state_dir)]
    argv += ["--port", str(port), "--host", "127.0.0.1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"the controller exited ({proc.returncode}):\n{log_path.read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the controller did not answer on {url} within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
