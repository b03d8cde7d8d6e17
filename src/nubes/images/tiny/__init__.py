"""The tiny guest image ("our cirros"): a busybox system booted by a Debian cloud kernel,
built offline from Debian packages in seconds, as a bootable qcow2 for VMs and a rootfs
tarball for system containers. It prints a boot marker, takes its hostname from a config
drive or the metadata service, answers HTTP, and powers off on ACPI or init signals.

Modules: ``build`` (the entry point), ``debs`` (packages and the cache), ``kernel`` and
``kmod`` (kernel and modules), ``userland`` and ``guest/`` (what runs inside), ``tree``,
``cpio``, ``initrd``, ``tarball`` and ``disk`` (the artefacts), ``tools`` (host tools),
``errors``.
"""

from nubes.images.tiny.build import TinyImage, build_tiny, default_cache_dir
from nubes.images.tiny.errors import MissingTool, TinyImageError
from nubes.images.tiny.userland import ADDR_MARKER, MARKER, SHUTDOWN_MARKER

__all__ = [
    "ADDR_MARKER",
    "MARKER",
    "SHUTDOWN_MARKER",
    "MissingTool",
    "TinyImage",
    "TinyImageError",
    "build_tiny",
    "default_cache_dir",
]
