"""A controller worker's process settings."""

from __future__ import annotations

import gc
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from nubes.controller import server


class Stop(Exception):
    pass


def test_a_worker_lets_waiting_threads_have_the_gil_sooner(monkeypatch, tmp_path):
    """The threads that wait for SQLite's write turn need the GIL to hand the turn on: a
    worker runs with a short switch interval, set before it builds anything."""
    seen: list[float] = []

    def build(*_args: object, **_kwargs: object) -> None:
        seen.append(sys.getswitchinterval())
        raise Stop

    monkeypatch.setattr(server.Services, "build", build)
    before = sys.getswitchinterval()
    try:
        with pytest.raises(Stop):
            server._run_worker(None, None, None)  # type: ignore[arg-type]
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(server.GIL_SWITCH_SECONDS)]
    assert server.GIL_SWITCH_SECONDS < 0.005  # CPython's default


def test_a_worker_freezes_what_it_built_out_of_the_collectors_reach(monkeypatch):
    """What a worker builds before serving lives as long as it: a full collection should not
    walk it. The young generation is collected less often than CPython's default."""
    seen: dict[str, Any] = {}

    class Built:
        db = type("Db", (), {"dispose": lambda self: None})()

        def close(self) -> None:
            pass

    class Server:
        def __init__(self, _config: object) -> None:
            pass

        def run(self, sockets: object = None) -> None:
            seen["frozen"] = gc.get_freeze_count()
            seen["threshold"] = gc.get_threshold()
            raise Stop

    monkeypatch.setattr(server.Services, "build", lambda *_a, **_k: Built())
    monkeypatch.setattr(server, "create_app", lambda _services: object())
    monkeypatch.setattr(server.uvicorn, "Server", Server)
    switch, threshold = sys.getswitchinterval(), gc.get_threshold()
    settings = SimpleNamespace(listen_host="127.0.0.1", port=0, log_level="warning")
    try:
        with pytest.raises(Stop):
            server._run_worker(settings, None, None)  # type: ignore[arg-type]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(switch)
    assert seen["frozen"] > 10_000  # this interpreter's modules, at least
    assert seen["threshold"] == (server.GC_YOUNG_OBJECTS, *threshold[1:])
    assert server.GC_YOUNG_OBJECTS > 700  # CPython's default
