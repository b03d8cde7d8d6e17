"""Where the agent's network files live: dnsmasq drops to ``nobody`` before it reads its hosts
file, so the directories above it must be traversable — the state dir (0700) is not."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nubes.agent import run


@pytest.mark.skipif(os.geteuid() != 0, reason="as root the files go under /run")
def test_as_root_each_state_dir_has_its_own_traversable_run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "RUN_ROOT", tmp_path / "run")
    (tmp_path / "a").mkdir(mode=0o700)
    first = run.network_run_dir(tmp_path / "a")
    assert first == run.network_run_dir(tmp_path / "a")  # a restarted agent finds its files
    assert first != run.network_run_dir(tmp_path / "b")  # two agents never share one
    assert not first.is_relative_to(tmp_path / "a")
    assert not first.exists()  # nothing made until dnsmasq needs it


def test_dnsmasq_directories_are_traversable_whatever_the_umask(tmp_path):
    from nubes.agent.network.dnsmasq import traversable

    old = os.umask(0o077)
    try:
        traversable(tmp_path / "run" / "x" / "dhcp" / "net")
    finally:
        os.umask(old)
    for directory in ("run", "run/x", "run/x/dhcp", "run/x/dhcp/net"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o755


def test_unprivileged_runs_keep_them_in_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert run.network_run_dir(tmp_path) == Path(tmp_path) / "network"
