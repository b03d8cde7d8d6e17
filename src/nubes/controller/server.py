"""Run the controller in this process (foreground) with uvicorn: one process, or a supervisor
and ``workers`` processes sharing the port.

One Python process serves on one core. With several workers each has its own listening socket
on the same port (``SO_REUSEPORT``: the kernel spreads connections over them), its own
database pool and its own loops; they tell each other of changes agents wait for
(:class:`nubes.compute.notify.Peers`) and, on SQLite, queue for the one writer on a file lock.
The supervisor holds the sockets, so a worker that dies is replaced without refusing a
connection; if the supervisor dies, the kernel ends the workers (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from nubes.api.app import create_app
from nubes.api.services import Services
from nubes.compute.notify import Peers
from nubes.config import Settings
from nubes.controller.wire import OneWriteHttpProtocol

log = logging.getLogger("nubes.controller")

#: a worker that exits this soon after starting, this many times in a row, is not restarted
#: again: the controller stops and says why (a bad database URL would otherwise spin)
QUICK_EXIT_SECONDS = 10.0
QUICK_EXITS = 3
STOP_SECONDS = 10.0
BIND_RETRY_SECONDS = 3.0
PR_SET_PDEATHSIG = 1
#: how long a worker's thread may run before another that wants the GIL gets it (CPython's
#: default is 5 ms). Measured on the boot+delete storm, with the loop keeping the turn:
#: medians 101.9 → 106.8/s, 4 interleaved pairs.
GIL_SWITCH_SECONDS = 0.0005
#: allocations between two collections of the youngest generation (CPython's default: 700)
GC_YOUNG_OBJECTS = 10_000


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    workers = settings.effective_workers
    if workers == 1:
        _run_worker(settings, None, None)
        return
    sockets = listen(settings.listen_host, settings.port, workers)
    try:
        if not Supervisor(settings, sockets).run():
            raise SystemExit(1)
    finally:
        for sock in sockets:
            sock.close()


def _run_worker(settings: Settings, sock: socket.socket | None, peers: Peers | None) -> None:
    # the threads that wait for SQLite's write turn need the GIL to hand the turn to this
    # loop; CPython's default lets a busy loop keep it 5 ms while the turn sits idle
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    services = Services.build(settings, peers=peers)
    app = create_app(services)
    _settle_heap()
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        http=OneWriteHttpProtocol,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
    finally:
        services.close()
        services.db.dispose()


def _settle_heap() -> None:
    """Keep the cyclic garbage collector off what lives as long as the worker. Everything
    built so far (modules, the app, mappers, models: some 170,000 objects) is frozen out of
    its reach: a full collection walked them all, 100-240 ms on this machine, about three
    times in a 30 s storm, holding the write turn when it struck inside a write. The young
    generation is collected every 10,000 allocations rather than 700: each collection costs
    what survives, and a request's objects are freed by their counts long before.
    Measured on the boot+delete storm: 1.45 s of collections per worker to 0.45 s."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_OBJECTS, middle, old)


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address. A plain bind first: a port already in use
    (by another controller, even one using SO_REUSEPORT) is refused, never silently shared."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    deadline = time.monotonic() + BIND_RETRY_SECONDS
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        while True:
            try:
                probe.bind(address)
                break
            except OSError as exc:
                # the workers of a controller killed a moment ago may still hold the port
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise SystemExit(
                        f"nubes controller: cannot listen on {host}:{port}: {exc}"
                    ) from exc
                time.sleep(0.1)
        address = probe.getsockname()  # port 0: the one the kernel chose
    sockets = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def _worker_main(
    settings: Settings, sock: socket.socket, group: str, index: int, count: int
) -> None:
    """In the forked worker: die with the supervisor, then serve."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(group):  # the supervisor died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _run_worker(settings, sock, Peers(group, index, count))


class Supervisor:
    def __init__(self, settings: Settings, sockets: list[socket.socket]) -> None:
        self.settings = settings
        self.sockets = sockets
        self.group = str(os.getpid())
        self.context = multiprocessing.get_context("fork")
        self.workers: dict[int, tuple[BaseProcess, float]] = {}
        self.quick_exits = 0
        self.stopping = False
        self.failed = False

    def _start(self, index: int) -> None:
        proc = self.context.Process(
            target=_worker_main,
            args=(self.settings, self.sockets[index], self.group, index, len(self.sockets)),
            name=f"nubes-controller-worker-{index}",
            daemon=False,
        )
        proc.start()
        self.workers[index] = (proc, time.monotonic())

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> bool:
        """Until SIGTERM or SIGINT (then the workers are stopped too); False when workers kept
        dying at start."""
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(len(self.sockets)):
                self._start(index)
            log.info(
                "controller: %d workers on %s:%d",
                len(self.sockets),
                self.settings.listen_host,
                self.settings.port,
            )
            while not self.stopping:
                sentinels = {proc.sentinel: index for index, (proc, _) in self.workers.items()}
                for ready in wait(list(sentinels), timeout=1.0):
                    if not self.stopping:
                        self._replace(sentinels[ready])  # type: ignore[index]
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return not self.failed

    def _replace(self, index: int) -> None:
        proc, started = self.workers[index]
        proc.join()
        quick = time.monotonic() - started < QUICK_EXIT_SECONDS
        self.quick_exits = self.quick_exits + 1 if quick else 0
        if self.quick_exits >= QUICK_EXITS:
            log.error(
                "controller worker %d exited with %s %d times in a row right after starting; "
                "stopping (see the messages above)",
                index,
                proc.exitcode,
                self.quick_exits,
            )
            self.stopping = self.failed = True
            return
        log.error("controller worker %d exited with %s; starting another", index, proc.exitcode)
        self._start(index)

    def _stop_all(self) -> None:
        for proc, _ in self.workers.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc, _ in self.workers.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
