"""build_tiny's orchestration with every host-touching step faked: the outputs land
atomically, a failure leaves the output directory as it was, and the cache directory default."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes.images.tiny import build as build_module
from nubes.images.tiny import debs
from nubes.images.tiny.errors import TinyImageError
from nubes.images.tiny.kernel import Kernel
from nubes.images.tiny.tools import HostTools


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Fakes for everything but the orchestration; returns the fake unpacked busybox root."""
    root = tmp_path / "unpacked"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"elf")
    kernel = Kernel("6.1.0-9-cloud-amd64", root / "vmlinuz", root / "modules")
    packages = (
        debs.DebPackage("linux-image-6.1.0-9-cloud-amd64", "6.1.1-1", "amd64"),
        debs.DebPackage("busybox-static", "1:1.35.0-4", "amd64"),
    )
    monkeypatch.setattr(build_module, "require_tools", lambda: HostTools({}, Path("/mbr")))
    monkeypatch.setattr(debs, "resolve", lambda progress: packages)
    monkeypatch.setattr(debs, "fetch", lambda package, directory, progress: Path("x.deb"))
    monkeypatch.setattr(debs, "unpack", lambda deb, directory, progress: root)
    monkeypatch.setattr(debs, "prune", lambda *args: [])
    monkeypatch.setattr(build_module, "locate_kernel", lambda path: kernel)
    monkeypatch.setattr(build_module, "applet_links", lambda busybox: ["sbin/init", "bin/sh"])
    monkeypatch.setattr(build_module, "guest_modules", lambda kernel: [])

    def fake_disk(tools: HostTools, *, kernel: Path, initrd: Path, work: Path, out: Path) -> None:
        assert initrd.stat().st_size > 0
        out.write_bytes(b"QFI\xfb")

    monkeypatch.setattr(build_module, "build_disk", fake_disk)
    return root


def test_outputs_are_renamed_into_place(faked: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    messages: list[str] = []

    image = build_module.build_tiny(out, cache_dir=tmp_path / "cache", progress=messages.append)

    assert sorted(p.name for p in out.iterdir()) == [
        "nubes-tiny-rootfs.tar.gz",
        "nubes-tiny.qcow2",
    ]
    assert image.disk.read_bytes() == b"QFI\xfb"
    assert image.kernel_version == "6.1.0-9-cloud-amd64"
    assert image.marker == "NUBES-TINY-BOOTED"
    assert messages[:3] == ["building initrd", "building disk image", "building rootfs tarball"]


def test_a_failure_leaves_nothing_behind(
    faked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_disk(*args: object, **kwargs: object) -> None:
        raise TinyImageError("making the disk failed")

    monkeypatch.setattr(build_module, "build_disk", broken_disk)
    out = tmp_path / "out"
    out.mkdir()
    (out / "unrelated").write_text("kept")

    with pytest.raises(TinyImageError, match="making the disk failed"):
        build_module.build_tiny(out, cache_dir=tmp_path / "cache")

    assert [p.name for p in out.iterdir()] == ["unrelated"]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(build_module.os, "geteuid", lambda: 0)
    assert build_module.default_cache_dir() == Path("/var/cache/nubes")
    monkeypatch.setattr(build_module.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build_module.default_cache_dir() == tmp_path / "nubes"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert build_module.default_cache_dir() == tmp_path / ".cache" / "nubes"
