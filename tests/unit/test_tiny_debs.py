"""Debian package resolution and the .deb cache of the tiny image builder, against canned
apt-cache output and a fake ``subp`` (no apt, no network)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from nubes.images.tiny import debs
from nubes.images.tiny.errors import TinyImageError
from nubes.subp import SubpResult

SHOW_META_AND_BUSYBOX = """\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Architecture: amd64
Provides: linux-latest-modules-6.1.0-56-cloud-amd64, virtualbox-guest-modules
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
SHA256: 00be21c0c17f08ddf26e82d3b53fe7a41efa4a288938da6bb69e89c4b25c281d

Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Architecture: amd64
Tag: admin::recovery, interface::shell, role::program, scope::utility,
 use::login, works-with::file
SHA256: 3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744
"""
SHOW_KERNEL = """\
Package: linux-image-6.1.0-56-cloud-amd64
Version: 6.1.192-2
Architecture: amd64
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
SHA256: e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee
"""


def noop(_message: str) -> None:
    pass


def test_parse_stanzas_joins_continuation_lines() -> None:
    meta, busybox = debs.parse_stanzas(SHOW_META_AND_BUSYBOX)
    assert meta["Package"] == "linux-image-cloud-amd64"
    assert busybox["Tag"].endswith("scope::utility,\nuse::login, works-with::file")
    assert debs.parse_stanzas("\n\n") == []


@pytest.mark.parametrize(
    "depends",
    [
        "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)",
        "linux-image-6.1.0-56-cloud-amd64",
        "kmod, linux-image-6.1.0-56-cloud-amd64:amd64 (= 6.1.192-2) | linux-image-x",
    ],
)
def test_kernel_package_from_depends(depends: str) -> None:
    assert debs.kernel_package_from(depends) == "linux-image-6.1.0-56-cloud-amd64"


def test_kernel_package_from_depends_without_a_cloud_kernel() -> None:
    with pytest.raises(TinyImageError, match="depends on no cloud kernel"):
        debs.kernel_package_from("linux-image-6.1.0-56-amd64, kmod")


def test_filename_matches_apt_get_download() -> None:
    package = debs.DebPackage("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64")
    assert package.filename == "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"


class FakeApt:
    """Stands in for nubes.subp.subp: apt-cache show, apt-get download, dpkg-deb -x."""

    def __init__(self, deb_content: bytes = b"deb") -> None:
        self.deb_content = deb_content
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, args: Sequence[str | Path], **kwargs: object) -> SubpResult:
        argv = tuple(str(a) for a in args)
        self.calls.append(argv)
        out = ""
        if argv[:2] == ("apt-cache", "show"):
            out = SHOW_KERNEL if "linux-image-6.1.0-56-cloud-amd64:amd64" in argv else ""
            if "busybox-static:amd64" in argv:
                out = SHOW_META_AND_BUSYBOX
        elif argv[0] == "apt-get":
            spec = argv[-1]
            name, version = spec.split(":", 1)[0], spec.split("=", 1)[1]
            cwd = kwargs["cwd"]
            assert isinstance(cwd, Path)
            filename = f"{name}_{version.replace(':', '%3a')}_amd64.deb"
            (cwd / filename).write_bytes(self.deb_content)
        elif argv[:2] == ("dpkg-deb", "-x"):
            target = Path(argv[3])
            (target / "bin").mkdir(parents=True)
            (target / "bin" / "busybox").write_bytes(b"elf")
        return SubpResult(argv, 0, out, "")

    def downloads(self) -> int:
        return sum(1 for c in self.calls if c[0] == "apt-get")


@pytest.fixture
def apt(monkeypatch: pytest.MonkeyPatch) -> FakeApt:
    fake = FakeApt()
    monkeypatch.setattr(debs, "subp", fake)
    return fake


def test_resolve_follows_the_metapackage_in_two_apt_cache_runs(apt: FakeApt) -> None:
    kernel, busybox = debs.resolve(noop)
    assert kernel == debs.DebPackage(
        "linux-image-6.1.0-56-cloud-amd64",
        "6.1.192-2",
        "amd64",
        "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee",
    )
    assert busybox.version == "1:1.35.0-4+deb12u1+b1"
    assert len(apt.calls) == 2


def package(content: bytes = b"deb") -> debs.DebPackage:
    sha = hashlib.sha256(content).hexdigest()
    return debs.DebPackage("busybox-static", "1:1.35.0-4", "amd64", sha)


def test_fetch_downloads_once_then_reuses(apt: FakeApt, tmp_path: Path) -> None:
    messages: list[str] = []
    first = debs.fetch(package(), tmp_path, messages.append)
    second = debs.fetch(package(), tmp_path, messages.append)

    assert first == second == tmp_path / "busybox-static_1%3a1.35.0-4_amd64.deb"
    assert apt.downloads() == 1
    assert messages == [
        "downloading busybox-static 1:1.35.0-4",
        "using cached busybox-static 1:1.35.0-4",
    ]
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left


def test_fetch_replaces_a_corrupt_cached_deb(apt: FakeApt, tmp_path: Path) -> None:
    (tmp_path / package().filename).write_bytes(b"truncated")
    assert debs.fetch(package(), tmp_path, noop).read_bytes() == b"deb"
    assert apt.downloads() == 1


def test_fetch_refuses_a_download_with_the_wrong_checksum(apt: FakeApt, tmp_path: Path) -> None:
    apt.deb_content = b"tampered"
    with pytest.raises(TinyImageError, match="SHA-256 differs"):
        debs.fetch(package(), tmp_path, noop)
    assert list(tmp_path.iterdir()) == []


def test_unpack_once(apt: FakeApt, tmp_path: Path) -> None:
    deb = tmp_path / "busybox-static_1%3a1.35.0-4_amd64.deb"
    root = debs.unpack(deb, tmp_path / "unpacked", noop)
    assert root == tmp_path / "unpacked" / "busybox-static_1%3a1.35.0-4_amd64"
    assert (root / "bin" / "busybox").read_bytes() == b"elf"
    assert debs.unpack(deb, tmp_path / "unpacked", noop) == root
    assert sum(1 for c in apt.calls if c[0] == "dpkg-deb") == 1
    assert [p.name for p in (tmp_path / "unpacked").iterdir()] == [root.name]


def test_prune_drops_superseded_versions_only(tmp_path: Path) -> None:
    debs_dir, unpacked = tmp_path / "debs", tmp_path / "unpacked"
    debs_dir.mkdir()
    unpacked.mkdir()
    keep = [
        debs.DebPackage("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2", "amd64"),
        debs.DebPackage("busybox-static", "1:1.35.0-5", "amd64"),
    ]
    old_kernel = "linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64"
    names = [p.filename for p in keep] + [f"{old_kernel}.deb", "busybox-static_1.0_amd64.deb"]
    names.append("qemu-utils_7.2_amd64.deb")  # not ours: stays
    for name in names:
        (debs_dir / name).write_bytes(b"")
    (unpacked / old_kernel).mkdir()
    (unpacked / keep[0].stem).mkdir()

    removed = debs.prune(debs_dir, unpacked, keep)

    assert sorted(p.name for p in removed) == sorted(
        [f"{old_kernel}.deb", old_kernel, "busybox-static_1.0_amd64.deb"]
    )
    assert sorted(p.name for p in debs_dir.iterdir()) == sorted(
        [keep[0].filename, keep[1].filename, "qemu-utils_7.2_amd64.deb"]
    )
    assert [p.name for p in unpacked.iterdir()] == [keep[0].stem]
