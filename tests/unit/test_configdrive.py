"""Config drives on the host (agent/configdrive.py): the ISO read back with pycdlib and, where
the host allows, through the kernel (loop mount); the container's tree; rebuilt only when the
content changes; how QEMU and LXC are told about them; and the tiny guest's reading of
meta_data.json."""

from __future__ import annotations

import base64
import io
import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pycdlib
import pytest

from nubes.agent import configdrive
from nubes.agent.hypervisors.base import HypervisorError
from nubes.agent.hypervisors.lxc.config import CgroupVersion, ContainerConfig, InvalidConfig, render
from nubes.agent.hypervisors.qemu.cmdline import Accel, InstancePaths, Machine, build_argv
from nubes.compute.metadata import config_drive_files
from nubes.images.tiny.userland import guest_file
from nubes.store.models import Instance
from nubes.subp import SubpError, subp

NAMES = {
    "openstack/latest/meta_data.json",
    "openstack/latest/network_data.json",
    "openstack/latest/user_data",
    "openstack/2018-08-27/meta_data.json",
    "ec2/latest/meta-data.json",
    "ec2/latest/meta_data.json",  # differs from the one above only in a character ISO drops
}


def files() -> dict[str, bytes]:
    made = {name: f"content of {name}\n".encode() for name in NAMES}
    made["openstack/latest/meta_data.json"] = json.dumps({"hostname": "cd-test-1"}).encode()
    return made


def read_back(iso_bytes: bytes) -> tuple[pycdlib.PyCdlib, dict[str, bytes]]:
    """The ISO's label and every file, by its Rock Ridge path."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(iso_bytes))
    found: dict[str, bytes] = {}
    for root, _dirs, names in iso.walk(rr_path="/"):
        for name in names:
            path = f"{root.rstrip('/')}/{name}"
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=path)
            found[path.lstrip("/")] = out.getvalue()
    return iso, found


# -- the ISO -----------------------------------------------------------------------------------


def test_the_iso_reads_back_with_its_label_and_long_names() -> None:
    out = io.BytesIO()
    configdrive.write_iso_to(files(), out)
    iso, found = read_back(out.getvalue())
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "config-2"
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
        assert found == files()
        joliet = io.BytesIO()
        iso.get_file_from_iso_fp(joliet, joliet_path="/openstack/latest/meta_data.json")
        assert joliet.getvalue() == files()["openstack/latest/meta_data.json"]
        plain = [name for _root, _dirs, names in iso.walk(iso_path="/EC2/LATEST") for name in names]
        assert sorted(plain) == ["META_DAT.JSO;1", "META_D_1.JSO;1"]  # 8.3 and unique
    finally:
        iso.close()


def test_sync_iso_writes_once_rebuilds_on_change_and_removes(tmp_path: Path) -> None:
    iso = tmp_path / "config-drive.iso"
    assert configdrive.sync_iso(iso, files())
    first = iso.stat()
    assert iso.stat().st_mode & 0o777 == 0o600  # user data may hold secrets
    assert not configdrive.sync_iso(iso, dict(reversed(list(files().items()))))  # same content
    assert iso.stat().st_ino == first.st_ino
    assert iso.stat().st_mtime_ns == first.st_mtime_ns

    changed = {**files(), "openstack/latest/user_data": b"#!/bin/sh\necho changed\n"}
    assert configdrive.sync_iso(iso, changed)
    assert read_back(iso.read_bytes())[1] == changed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config-drive.iso",
        "config-drive.iso.sha256",
    ]  # no temporary file left behind

    iso.unlink()  # gone by other hands: rebuilt although the digest matches
    assert configdrive.sync_iso(iso, changed)

    assert configdrive.sync_iso(iso, None)
    assert list(tmp_path.iterdir()) == []
    assert not configdrive.sync_iso(iso, None)


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a b", ".hidden", "a/" * 7 + "b", "x\n"],
)
def test_unsafe_paths_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(HypervisorError, match="unsafe path") as caught:
        configdrive.sync_iso(tmp_path / "cd.iso", {path: b"x"})
    assert not caught.value.retryable
    assert list(tmp_path.iterdir()) == []


def test_a_path_that_is_both_file_and_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HypervisorError, match="both a file and a directory"):
        configdrive.sync_tree(tmp_path / "cd", {"a": b"1", "a/b": b"2"})


def test_the_wire_format_is_base64() -> None:
    assert configdrive.from_wire(None) is None
    assert configdrive.from_wire({"a/b": base64.b64encode(b"\x00\xff").decode()}) == {
        "a/b": b"\x00\xff"
    }
    with pytest.raises(HypervisorError, match="not base64"):
        configdrive.from_wire({"a": "***"})


@pytest.fixture
def mounted_iso(tmp_path: Path) -> Iterator[Path]:
    """The ISO of ``files()`` loop-mounted read-only by the kernel; skips without loop
    devices, an iso9660 driver in the kernel or the right to mount."""
    if shutil.which("mount") is None or not Path("/dev/loop-control").exists():
        pytest.skip("no loop devices on this host (/dev/loop-control)")
    if "iso9660" not in Path("/proc/filesystems").read_text().split():
        pytest.skip("this host's kernel has no iso9660 driver (/proc/filesystems)")
    iso, mountpoint = tmp_path / "cd.iso", tmp_path / "mnt"
    configdrive.sync_iso(iso, files())
    mountpoint.mkdir()
    try:
        subp(["mount", "-t", "iso9660", "-o", "loop,ro", iso, mountpoint], timeout=30)
    except SubpError as exc:
        pytest.skip(f"cannot loop-mount here: {exc}")
    try:
        yield mountpoint
    finally:
        subp(["umount", mountpoint], timeout=30, check=False)


def test_the_kernel_reads_the_iso_with_rock_ridge_names(mounted_iso: Path) -> None:
    found = {
        str(path.relative_to(mounted_iso)): path.read_bytes()
        for path in mounted_iso.rglob("*")
        if path.is_file()
    }
    assert found == files()


def test_isoinfo_reads_the_tree_by_rock_ridge_and_joliet(tmp_path: Path) -> None:
    """A second, independent reader (genisoimage's isoinfo), for hosts that cannot mount."""
    if shutil.which("isoinfo") is None:
        pytest.skip("no isoinfo (Debian package genisoimage)")
    iso = tmp_path / "cd.iso"
    configdrive.sync_iso(iso, files())
    for extension in ("-R", "-J"):
        listed = subp(["isoinfo", extension, "-f", "-i", iso], timeout=30).stdout.split()
        assert {p.lstrip("/") for p in listed} >= NAMES
        for name in NAMES:
            extracted = subp(["isoinfo", extension, "-x", f"/{name}", "-i", iso], timeout=30)
            assert extracted.stdout.encode() == files()[name]
    label = subp(["isoinfo", "-d", "-i", iso], timeout=30).stdout
    assert "Volume id: config-2" in label.splitlines()


def test_blkid_sees_the_config_2_label(tmp_path: Path) -> None:
    if shutil.which("blkid") is None:
        pytest.skip("no blkid (util-linux)")
    iso = tmp_path / "cd.iso"
    configdrive.sync_iso(iso, files())
    out = subp(["blkid", "-o", "export", iso], timeout=30).stdout
    assert "LABEL=config-2" in out.splitlines()
    assert "TYPE=iso9660" in out.splitlines()


# -- the container's tree ----------------------------------------------------------------------


def test_sync_tree_writes_once_rebuilds_on_change_and_removes(tmp_path: Path) -> None:
    tree = tmp_path / "config-drive"
    assert configdrive.sync_tree(tree, files())
    on_disk = {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    assert on_disk == files()
    marker = tree / "openstack" / "latest" / "meta_data.json"
    inode = marker.stat().st_ino
    assert not configdrive.sync_tree(tree, files())
    assert marker.stat().st_ino == inode

    assert configdrive.sync_tree(tree, {"openstack/latest/meta_data.json": b"{}"})
    assert [str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()] == [
        "openstack/latest/meta_data.json"
    ]  # files of the old content are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config-drive", "config-drive.sha256"]

    assert configdrive.sync_tree(tree, None)
    assert list(tmp_path.iterdir()) == []


# -- what the hypervisors are told -------------------------------------------------------------


def test_qemu_attaches_the_iso_read_only_on_virtio_only_when_there_is_one() -> None:
    paths = InstancePaths(Path("/var/lib/nubes/qemu/instances/i-1"))
    plain = build_argv(Machine("i-1", 1, 128, Accel.tcg), paths)
    argv = build_argv(Machine("i-1", 1, 128, Accel.tcg, config_drive=paths.config_drive), paths)
    assert "config0" not in " ".join(plain)
    blockdevs = [json.loads(v) for f, v in itertools.pairwise(argv) if f == "-blockdev"]
    drive = next(b for b in blockdevs if b["node-name"] == "config0")
    assert drive["read-only"] is True
    assert drive["file"] == {
        "driver": "file",
        "filename": "/var/lib/nubes/qemu/instances/i-1/config-drive.iso",
        "read-only": True,
    }
    devices = [v for f, v in itertools.pairwise(argv) if f == "-device"]
    assert "virtio-blk-pci,drive=config0,serial=config-2" in devices
    assert argv[-2:] == ["-S", "-daemonize"]


def lxc_config(drive: Path | None) -> ContainerConfig:
    root = Path("/var/lib/nubes/lxc/containers/nubes-i1")
    return ContainerConfig(
        name="nubes-i1",
        hostname="web-1",
        rootfs_lower=Path("/var/lib/nubes/lxc/images/img/rootfs"),
        rootfs_upper=root / "upper",
        console_log=root / "console.log",
        lxc_log=root / "lxc.log",
        ram_mb=64,
        vcpus=1,
        cgroup=CgroupVersion.v2,
        config_drive=drive,
    )


def test_lxc_bind_mounts_the_tree_read_only_at_the_seed_dir() -> None:
    drive = Path("/var/lib/nubes/lxc/containers/nubes-i1/config-drive")
    assert "lxc.mount.entry" not in render(lxc_config(None))
    mounts = [line for line in render(lxc_config(drive)).splitlines() if "mount.entry" in line]
    assert mounts == [
        f"lxc.mount.entry = {drive} var/lib/cloud/seed/config_drive none bind,ro,create=dir 0 0"
    ]


@pytest.mark.parametrize("drive", ["/a b/config-drive", "relative/config-drive", "/a:b/cd"])
def test_lxc_refuses_a_tree_path_a_mount_entry_would_misread(drive: str) -> None:
    with pytest.raises(InvalidConfig, match="config drive"):
        render(lxc_config(Path(drive)))


# -- the tiny guest ----------------------------------------------------------------------------


def guest_json_hostname(document: str) -> str:
    """The tiny guest's ``json_hostname`` (guest/init.sh) run by this host's sh and awk."""
    script = guest_file("init.sh")
    functions = [
        script[script.index(f"{name}() {{") :].split("\n}\n", 1)[0] + "\n}\n"
        for name in ("clean_hostname", "json_hostname")
    ]
    return subp(["sh", "-c", "".join(functions) + "json_hostname"], input=document).stdout


def test_the_guest_reads_our_meta_data_hostname() -> None:
    row = Instance(id="i-1", name="CD test_1", project_id="p", flavor_id="1")
    row.instance_metadata = {"hostname": "not-this-one"}
    meta = config_drive_files(row)["openstack/latest/meta_data.json"].decode()
    assert guest_json_hostname(meta).strip() == "cd-test-1"


@pytest.mark.parametrize(
    "document",
    [
        '{"meta": {"hostname": "evil"}, "uuid": "u", "hostname" :  "nova-1", "name": "n"}',
        '{\n\t"hostname":"nova-1"\n}',
        '{"a": "q\\"hostname\\": \\"evil\\"", "keys": [{"hostname": "evil"}],'
        ' "hostname": "nova-1"}',
    ],
)
def test_the_guest_finds_the_top_level_hostname_whatever_the_layout(document: str) -> None:
    assert guest_json_hostname(document).strip() == "nova-1"
