"""Host tool checks of the tiny image builder: a missing tool names its Debian package."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes.images.tiny import tools
from nubes.images.tiny.errors import MissingTool


def test_missing_tools_name_their_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    present = {"apt-get", "apt-cache", "dpkg-deb", "syslinux"}
    monkeypatch.setattr(tools, "find_command", lambda c: f"/usr/bin/{c}" if c in present else None)
    monkeypatch.setattr(tools, "MBR_BIN_PATHS", (tmp_path / "absent-mbr.bin",))

    with pytest.raises(MissingTool) as caught:
        tools.require_tools()

    assert caught.value.packages == ("dosfstools", "mtools", "qemu-utils", "syslinux-common")
    message = str(caught.value)
    assert "qemu-img (Debian package qemu-utils)" in message
    assert "apt-get install dosfstools mtools qemu-utils syslinux-common" in message


def test_all_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mbr = tmp_path / "mbr.bin"
    mbr.write_bytes(b"\0" * 440)
    monkeypatch.setattr(tools, "find_command", lambda c: f"/usr/sbin/{c}")
    monkeypatch.setattr(tools, "MBR_BIN_PATHS", (mbr,))
    found = tools.require_tools()
    assert found["mkfs.vfat"] == "/usr/sbin/mkfs.vfat"
    assert found.mbr_bin == mbr
