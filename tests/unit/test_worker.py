"""A controller worker's process settings."""

from __future__ import annotations

import sys

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
