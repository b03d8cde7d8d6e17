"""The Debian packages the tiny image is made of: which exact version, fetched once into the
cache, unpacked once.

Resolution reads only the local apt lists (``apt-cache``); ``apt-get download`` talks to the
configured Debian mirror, and only when the cache lacks that exact version. A cached .deb is
reused when its SHA-256 matches the apt lists. Nothing is installed on the host, and nothing
but Debian's own mirrors is ever contacted.

Cache layout (``cache_dir``)::

    debs/<package>_<version>_<arch>.deb      as apt-get download names it (":" -> "%3a")
    tiny/unpacked/<package>_<version>_<arch>/ dpkg-deb -x of that .deb
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nubes.images.tiny.errors import TinyImageError
from nubes.subp import SubpError, subp

ARCH = "amd64"
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
_KERNEL_PACKAGE = re.compile(r"^linux-image-\d\S*-cloud-amd64$")
# Families whose superseded versions the cache drops (the debs/ directory may be shared).
_FAMILIES = (re.compile(r"^linux-image-\d\S*-cloud-amd64$"), re.compile(r"^busybox-static$"))

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str
    sha256: str | None = None

    @property
    def stem(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}"

    @property
    def filename(self) -> str:
        return f"{self.stem}.deb"


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """The deb822 stanzas in ``text`` (continuation lines joined to their field)."""
    stanzas: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if fields:
                stanzas.append(fields)
            fields, key = {}, ""
        elif line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return stanzas


def kernel_package_from(depends: str) -> str:
    """The versioned ``linux-image-*-cloud-amd64`` package in a metapackage's Depends."""
    for clause in depends.split(","):
        for alternative in clause.split("|"):
            name = alternative.split("(")[0].strip().split(":")[0]
            if _KERNEL_PACKAGE.match(name):
                return name
    raise TinyImageError(f"{KERNEL_METAPACKAGE} depends on no cloud kernel: {depends!r}")


def package_from_stanza(fields: dict[str, str]) -> DebPackage:
    try:
        return DebPackage(
            fields["Package"], fields["Version"], fields["Architecture"], fields.get("SHA256")
        )
    except KeyError as exc:
        raise TinyImageError(f"apt-cache show gave no {exc.args[0]} field") from exc


def show(*names: str) -> dict[str, dict[str, str]]:
    """Package name -> the candidate version's fields, from the local apt lists (one
    ``apt-cache`` run: loading the cache is most of its time)."""
    argv = ["apt-cache", "show", "--no-all-versions", *(f"{n}:{ARCH}" for n in names)]
    try:
        result = subp(argv, timeout=60)
    except SubpError as exc:
        raise TinyImageError(
            f"apt knows no {' or '.join(names)} for {ARCH} (was apt-get update run?): {exc}"
        ) from exc
    found = {fields.get("Package", ""): fields for fields in parse_stanzas(result.stdout)}
    missing = [n for n in names if n not in found]
    if missing:
        raise TinyImageError(f"apt-cache show printed nothing for {', '.join(missing)}")
    return found


def resolve(progress: Progress) -> tuple[DebPackage, DebPackage]:
    """The candidate (kernel, busybox-static) packages: the versions ``apt-get download``
    fetches. The kernel metapackage is resolved through its candidate's Depends field
    (``apt-cache show --no-all-versions``), which follows apt's pin policy; ``apt-cache
    depends`` reads the newest version in the lists instead."""
    progress(f"resolving {KERNEL_METAPACKAGE}")
    first = show(KERNEL_METAPACKAGE, BUSYBOX_PACKAGE)
    kernel_name = kernel_package_from(first[KERNEL_METAPACKAGE].get("Depends", ""))
    kernel = package_from_stanza(show(kernel_name)[kernel_name])
    return kernel, package_from_stanza(first[BUSYBOX_PACKAGE])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _intact(path: Path, package: DebPackage) -> bool:
    return path.is_file() and (package.sha256 is None or sha256_of(path) == package.sha256)


def fetch(package: DebPackage, debs_dir: Path, progress: Progress) -> Path:
    """``debs_dir/<package.filename>``: reused when intact, else downloaded (atomically)."""
    target = debs_dir / package.filename
    if _intact(target, package):
        progress(f"using cached {package.name} {package.version}")
        return target
    debs_dir.mkdir(parents=True, exist_ok=True)
    progress(f"downloading {package.name} {package.version}")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=debs_dir) as tmp:
        argv = ["apt-get", "download", f"{package.name}:{package.arch}={package.version}"]
        if os.geteuid() == 0:  # root: no _apt sandbox (it cannot write into a private dir)
            argv[1:1] = ["-o", "APT::Sandbox::User=root"]
        try:
            subp(argv, cwd=Path(tmp), timeout=600)
        except SubpError as exc:
            raise TinyImageError(f"could not download {package.name}: {exc}") from exc
        got = sorted(Path(tmp).glob("*.deb"))
        if len(got) != 1:
            raise TinyImageError(f"apt-get download {package.name} left {len(got)} .deb files")
        if not _intact(got[0], package):
            raise TinyImageError(f"{got[0].name}: SHA-256 differs from the apt lists")
        os.replace(got[0], target)
    return target


def unpack(deb: Path, unpacked_dir: Path, progress: Progress) -> Path:
    """``unpacked_dir/<deb stem>``, made once by ``dpkg-deb -x`` (into a temporary directory
    that is renamed into place, so a half-unpacked tree is never seen)."""
    target = unpacked_dir / deb.name.removesuffix(".deb")
    if target.is_dir():
        return target
    unpacked_dir.mkdir(parents=True, exist_ok=True)
    progress(f"unpacking {deb.name}")
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=unpacked_dir))
    try:
        subp(["dpkg-deb", "-x", deb, tmp], timeout=300)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # another build renamed the same tree first: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def prune(debs_dir: Path, unpacked_dir: Path, keep: Iterable[DebPackage]) -> list[Path]:
    """Drop superseded versions of the kernel and busybox from the cache; returns them."""
    stems = {package.stem for package in keep}
    removed = []
    candidates = [*debs_dir.glob("*.deb"), *(p for p in unpacked_dir.glob("*") if p.is_dir())]
    for path in candidates:
        stem = path.name.removesuffix(".deb")
        name = stem.split("_", 1)[0]
        if stem in stems or path.name.startswith(".") or not any(f.match(name) for f in _FAMILIES):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
