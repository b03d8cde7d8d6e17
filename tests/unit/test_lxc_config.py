"""The LXC driver's pure parts: config rendering, names, partition tables, /proc parsers."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from nubes.agent.hypervisors.lxc import config, host, layout
from nubes.agent.hypervisors.lxc.config import CgroupVersion, ContainerConfig, InvalidConfig
from nubes.agent.hypervisors.lxc.partitions import SECTOR, PartitionError, root_partition
from nubes.agent.hypervisors.lxc.rootfs import resolve_in_root

INSTANCE = Path("/var/lib/nubes/lxc/containers/nubes-i1")


def make_config(**changes: object) -> ContainerConfig:
    values: dict[str, object] = {
        "name": "nubes-i1",
        "hostname": "web-1",
        "rootfs_lower": Path("/var/lib/nubes/lxc/images/img/rootfs"),
        "rootfs_upper": INSTANCE / "upper",
        "console_log": INSTANCE / "console.log",
        "lxc_log": INSTANCE / "lxc.log",
        "ram_mb": 256,
        "vcpus": 2,
        "cgroup": CgroupVersion.v2,
    }
    values.update(changes)
    return ContainerConfig(**values)  # type: ignore[arg-type]


def settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" = ")
            found.setdefault(key, []).append(value)
    return found


# --- config rendering -------------------------------------------------------------------


def test_render_v2_has_every_setting_the_driver_relies_on() -> None:
    lines = settings(config.render(make_config()))
    assert lines["lxc.include"] == ["/usr/share/lxc/config/common.conf"]
    assert lines["lxc.uts.name"] == ["web-1"]
    assert lines["lxc.rootfs.path"] == [
        "overlay:/var/lib/nubes/lxc/images/img/rootfs:/var/lib/nubes/lxc/containers/nubes-i1/upper"
    ]
    assert lines["lxc.init.cmd"] == ["/sbin/init"]
    assert lines["lxc.signal.halt"] == [config.HALT_SIGNAL] == ["SIGUSR2"]
    assert lines["lxc.signal.reboot"] == [config.REBOOT_SIGNAL] == ["SIGTERM"]
    assert lines["lxc.net.0.type"] == ["empty"]
    assert lines["lxc.cgroup2.memory.max"] == [str(256 * 1024 * 1024)]
    assert lines["lxc.cgroup2.cpu.max"] == ["200000 100000"]
    assert lines["lxc.console.logfile"] == [str(INSTANCE / "console.log")]
    assert lines["lxc.console.rotate"] == ["1"]
    assert lines["lxc.log.file"] == [str(INSTANCE / "lxc.log")]
    assert "linux_immutable" in lines["lxc.cap.drop"]
    assert not any(key.startswith("lxc.cgroup.") for key in lines)


def test_render_v1_uses_legacy_keys_period_before_quota() -> None:
    text = config.render(make_config(cgroup=CgroupVersion.v1, vcpus=3, ram_mb=64))
    lines = settings(text)
    assert lines["lxc.cgroup.memory.limit_in_bytes"] == [str(64 * 1024 * 1024)]
    assert lines["lxc.cgroup.cpu.cfs_period_us"] == ["100000"]
    assert lines["lxc.cgroup.cpu.cfs_quota_us"] == ["300000"]
    assert text.index("cfs_period_us") < text.index("cfs_quota_us")
    assert not any(key.startswith("lxc.cgroup2.") for key in lines)


def test_render_is_deterministic_and_include_is_optional() -> None:
    assert config.render(make_config()) == config.render(make_config())
    assert "lxc.include" not in config.render(make_config(include=None))


@pytest.mark.parametrize(
    "hostname",
    [
        "web-1\nlxc.mount.entry = / host none bind 0 0",
        "a b",
        "",
        "-leading-dash",
        "x" * 65,
        "under_score",
        "semi;colon",
    ],
)
def test_render_refuses_unsafe_hostnames(hostname: str) -> None:
    with pytest.raises(InvalidConfig, match="hostname"):
        config.render(make_config(hostname=hostname))


@pytest.mark.parametrize("hostname", ["a", "web-1", "Web-1.example.org", "x" * 63])
def test_render_accepts_host_names(hostname: str) -> None:
    assert f"lxc.uts.name = {hostname}\n" in config.render(make_config(hostname=hostname))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("rootfs_upper", Path("/srv/a:b/upper"), "':'"),
        ("rootfs_lower", Path("/srv/new\nline"), "control"),
        ("console_log", Path("relative/console.log"), "absolute"),
        ("ram_mb", 0, "ram_mb"),
        ("vcpus", 0, "vcpus"),
        ("name", "nubes/../x", "name"),
    ],
)
def test_render_refuses_values_lxc_would_misread(field: str, value: object, match: str) -> None:
    with pytest.raises(InvalidConfig, match=match):
        config.render(make_config(**{field: value}))


# --- names and paths --------------------------------------------------------------------


def test_container_name_is_the_id_when_short_and_safe() -> None:
    assert layout.container_name("3f2a9c1e-0b1d-4c55-9a0e-1234567890ab") == (
        "nubes-3f2a9c1e-0b1d-4c55-9a0e-1234567890ab"
    )


@pytest.mark.parametrize("instance_id", ["i" * 200, "a/b", "../../etc", "sp ace", "é"])
def test_container_name_is_shortened_deterministically(instance_id: str) -> None:
    name = layout.container_name(instance_id)
    assert name == layout.container_name(instance_id)
    assert name.startswith("nubes-")
    assert len(name) <= layout.NAME_MAX
    assert "/" not in name
    assert " " not in name
    assert ".." not in name
    assert name != layout.container_name(instance_id + "x")
    # the rendered config accepts it
    config.render(make_config(name=name))


def test_layout_paths() -> None:
    paths = layout.Layout(Path("/s")).instance("i1")
    assert paths.dir == Path("/s/containers/nubes-i1")
    assert paths.lxcpath == Path("/s/containers")
    assert paths.upper == Path("/s/containers/nubes-i1/upper")
    assert layout.Layout(Path("/s")).image_dir("img-1") == Path("/s/images/img-1")


# --- partition tables -------------------------------------------------------------------


def mbr(*entries: tuple[int, int, int]) -> bytes:
    head = bytearray(64 * 1024)
    for index, (ptype, first, sectors) in enumerate(entries):
        struct.pack_into("<B3xB3xII", head, 446 + 16 * index, 0, ptype, first, sectors)
    head[510:512] = b"\x55\xaa"
    return bytes(head)


def gpt(*entries: tuple[str, int, int]) -> bytes:
    head = bytearray(mbr((0xEE, 1, 0xFFFFFFFF)))
    header = SECTOR
    head[header : header + 8] = b"EFI PART"
    struct.pack_into("<QII", head, header + 72, 2, 128, 128)
    for index, (type_guid, first, last) in enumerate(entries):
        at = 2 * SECTOR + 128 * index
        head[at : at + 16] = uuid.UUID(type_guid).bytes_le
        struct.pack_into("<QQ", head, at + 32, first, last)
    return bytes(head)


EFI = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX_DATA = "0fc63daf-8483-4772-8e79-3d69d8477de4"
ROOT_X86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
GIB = 1 << 30


def test_no_partition_table_means_the_whole_disk() -> None:
    part = root_partition(bytes(64 * 1024), 5 * GIB)
    assert (part.number, part.offset, part.size) == (0, 0, 5 * GIB)


def test_mbr_largest_linux_partition_skipping_swap_and_extended() -> None:
    head = mbr(
        (0x83, 2048, 1000),
        (0x82, 4096, 900_000),
        (0x05, 1_000_000, 2_000_000),
        (0x83, 3_000_000, 50_000),
    )
    part = root_partition(head, 4 * GIB)
    assert (part.number, part.offset, part.size) == (4, 3_000_000 * SECTOR, 50_000 * SECTOR)


def test_gpt_prefers_the_discoverable_root_type_over_size() -> None:
    head = gpt(
        (EFI, 2048, 4095), (LINUX_DATA, 4096, 3_000_000), (ROOT_X86_64, 3_000_001, 3_100_000)
    )
    part = root_partition(head, 4 * GIB)
    assert part.number == 3
    assert part.type == ROOT_X86_64


def test_gpt_largest_linux_partition_skipping_efi() -> None:
    head = gpt((EFI, 2048, 400_000), (LINUX_DATA, 400_001, 500_000))
    part = root_partition(head, 4 * GIB)
    assert (part.number, part.offset) == (2, 400_001 * SECTOR)


@pytest.mark.parametrize(
    "head",
    [
        mbr((0x82, 2048, 1000)),  # only swap
        mbr((0x83, 2048, 100 * GIB // SECTOR)),  # beyond the disk
        gpt((EFI, 2048, 4095)),  # only EFI
        mbr((0xEE, 1, 100))[:SECTOR] + bytes(SECTOR),  # protective MBR, no GPT header
    ],
)
def test_partition_tables_without_a_usable_root_are_refused(head: bytes) -> None:
    with pytest.raises(PartitionError):
        root_partition(head, GIB)


# --- /proc parsers ------------------------------------------------------------------------

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
31 22 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 22 7:0 / /srv/state/containers/nubes-a/mnt rw - ext4 /dev/loop0 ro
41 40 0:50 / /srv/state/containers/nubes-a/mnt/deep rw - tmpfs tmpfs rw
42 22 0:51 / /srv/state/containers/nubes-ab rw - tmpfs tmpfs rw
43 22 0:52 / /srv/with\\040space rw - tmpfs tmpfs rw
"""


def test_mounts_under_is_deepest_first_and_respects_path_boundaries() -> None:
    assert host.mounts_under(MOUNTINFO, Path("/srv/state/containers/nubes-a")) == [
        "/srv/state/containers/nubes-a/mnt/deep",
        "/srv/state/containers/nubes-a/mnt",
    ]
    assert host.mounts_under(MOUNTINFO, Path("/srv/with space")) == ["/srv/with space"]
    assert host.mounts_under(MOUNTINFO, Path("/nowhere")) == []


def test_cgroup_detection() -> None:
    assert host.detect_cgroup(MOUNTINFO, None) is CgroupVersion.v1
    assert host.detect_cgroup("", "cpuset cpu io memory pids\n") is CgroupVersion.v2
    assert "memory" in str(host.detect_cgroup("", "cpu io\n"))
    assert "cgroup v1 lacks: memory, cpu" in str(host.detect_cgroup("", None))


def test_filesystems() -> None:
    assert host.filesystems("nodev\tsysfs\nnodev\toverlay\n\text4\n") == {
        "sysfs",
        "overlay",
        "ext4",
    }


# --- rootfs checks --------------------------------------------------------------------------


def test_resolve_in_root_follows_symlinks_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin/busybox").write_text("")
    (root / "sbin").symlink_to("usr/sbin")
    (root / "usr/sbin/init").symlink_to("/bin/busybox")  # absolute: relative to the root
    assert resolve_in_root(root, "/sbin/init") == root / "bin/busybox"
    (root / "usr/sbin/loop").symlink_to("loop")
    assert resolve_in_root(root, "/sbin/loop") is None
    assert resolve_in_root(root, "/sbin/missing") is None
    (root / "usr/sbin/escape").symlink_to("../../../../etc/passwd")
    assert resolve_in_root(root, "/sbin/escape") is None
