"""``nubes image``: register images and upload their files; build the tiny test image.

An image has up to two files: a bootable disk (qcow2 or raw, for VMs) and a rootfs tarball
(for containers). Files are streamed from disk in chunks, never read whole, with a progress
bar on stderr; ``PUT /v1/images/{id}/file`` is exempt from the API's general body limit. An
image whose upload fails is deleted again, so a failed ``create`` leaves nothing behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from nubes.cli.client import TIMEOUT_SECONDS, ApiClient, api, path
from nubes.cli.errors import CliError
from nubes.cli.flavor import PropertyOption, parse_properties
from nubes.cli.output import (
    Column,
    Format,
    FormatOption,
    console,
    note,
    print_json,
    render_list,
    render_one,
    say,
    warn,
)

app = typer.Typer(
    help="Images: disks and root filesystems servers boot from.", no_args_is_help=True
)
build_app = typer.Typer(help="Build an image here and register it.", no_args_is_help=True)
app.add_typer(build_app, name="build")

CHUNK = 1 << 20

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("status", "Status"),
    ("visibility", "Visibility"),
    ("disk_format", "Disk format"),
    ("disk", "Disk"),
    ("rootfs", "Rootfs"),
]
FIELDS: list[Column] = [
    ("id", "ID"),
    ("name", "Name"),
    ("status", "Status"),
    ("visibility", "Visibility"),
    ("project_id", "Project"),
    ("disk_format", "Disk format"),
    ("disk", "Disk"),
    ("disk_checksum", "Disk SHA-256"),
    ("container_format", "Container format"),
    ("rootfs", "Rootfs"),
    ("rootfs_checksum", "Rootfs SHA-256"),
    ("properties", "Properties"),
    ("created_at", "Created"),
    ("updated_at", "Updated"),
]


class DiskFormat(StrEnum):
    qcow2 = "qcow2"
    raw = "raw"


PublicOption = Annotated[
    bool, typer.Option("--public", help="Every project may use it (cloud admins).")
]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _for_people(image: dict[str, Any]) -> dict[str, Any]:
    return {
        **image,
        "disk": human_size(image["disk_size"]) if image.get("disk_checksum") else "",
        "rootfs": human_size(image["rootfs_size"]) if image.get("rootfs_checksum") else "",
    }


def _render(image: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.json:
        print_json(image)
    else:
        render_one(_for_people(image), fmt, FIELDS)


# upload ----------------------------------------------------------------------------------------


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
    )


def upload_file(client: ApiClient, image_id: str, kind: str, file: Path) -> dict[str, Any]:
    """Stream one file of an image to the controller; returns the image."""
    size = file.stat().st_size
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    if client.token:
        headers["X-Auth-Token"] = client.token
    with file.open("rb") as handle, _progress() as progress:
        bar = progress.add_task(f"{kind} {file.name}", total=size)

        def chunks() -> Iterator[bytes]:
            while chunk := handle.read(CHUNK):
                progress.advance(bar, len(chunk))
                yield chunk

        try:
            response = client.http.put(
                path("images", image_id, "file"),
                params={"kind": kind},
                content=chunks(),
                headers=headers,
            )
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the controller at {client.url}: is it running? (nubes status)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(
                f"the controller at {client.url} did not answer the {kind} upload within "
                f"{TIMEOUT_SECONDS:.0f} s"
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise CliError(f"uploading {file} to {client.url} failed: {exc}") from exc
    if response.status_code >= 400:
        # ApiClient.request sends JSON bodies only; its error decoding is the one to use.
        raise client._error(response)
    try:
        image: dict[str, Any] = response.json()
    except ValueError as exc:
        raise CliError(
            f"the controller at {client.url} answered the {kind} upload with a body that is "
            "not JSON"
        ) from exc
    return image


def _readable(file: Path, option: str) -> Path:
    file = file.expanduser()
    if not file.is_file():
        raise CliError(f"{option} {file}: no such file")
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise CliError(f"cannot read {option} {file}: {exc.strerror}") from exc
    return file


def register(
    client: ApiClient,
    name: str,
    *,
    disk: Path | None,
    rootfs: Path | None,
    disk_format: DiskFormat,
    public: bool,
    properties: dict[str, str],
) -> dict[str, Any]:
    """Create the image record, then upload its files; undo the record if an upload fails."""
    files = [("disk", disk), ("rootfs", rootfs)]
    body = {
        "name": name,
        "disk_format": disk_format.value,
        "visibility": "public" if public else "private",
        "properties": properties,
    }
    image: dict[str, Any] = client.post(path("images"), json=body)
    try:
        for kind, file in files:
            if file is not None:
                image = upload_file(client, image["id"], kind, file)
    except BaseException:  # Ctrl-C included: never leave a half-uploaded image behind
        try:
            client.delete(path("images", image["id"]))
        except CliError as exc:
            warn(f"could not delete the incomplete image {image['id']}: {exc}")
        raise
    return image


# commands --------------------------------------------------------------------------------------


@app.command("create")
def image_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Image name.")],
    file: Annotated[
        Path | None, typer.Option("--file", help="The disk file (qcow2 or raw), for VMs.")
    ] = None,
    rootfs: Annotated[
        Path | None, typer.Option("--rootfs", help="A rootfs tarball (.tar.gz), for containers.")
    ] = None,
    disk_format: Annotated[
        DiskFormat, typer.Option("--disk-format", help="Format of --file.")
    ] = DiskFormat.qcow2,
    public: PublicOption = False,
    properties: PropertyOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Register an image and upload its disk and/or rootfs."""
    if file is None and rootfs is None:
        raise typer.BadParameter("give --file (a disk), --rootfs (a tarball), or both")
    disk = _readable(file, "--file") if file is not None else None
    tarball = _readable(rootfs, "--rootfs") if rootfs is not None else None
    image = register(
        api(ctx),
        name,
        disk=disk,
        rootfs=tarball,
        disk_format=disk_format,
        public=public,
        properties=parse_properties(properties),
    )
    _render(image, fmt)


@app.command("list")
def image_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only images with this name.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List the images you may use."""
    images = api(ctx).list_all(path("images"), "images", {"name": name})
    if fmt is Format.json:
        print_json(images)
        return
    render_list([_for_people(i) for i in images], COLUMNS, fmt)


@app.command("show")
def image_show(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="Image id or name.")],
    fmt: FormatOption = Format.table,
) -> None:
    """Show an image."""
    _render(api(ctx).get(path("images", image)), fmt)


@app.command("delete")
def image_delete(
    ctx: typer.Context, images: Annotated[list[str], typer.Argument(help="Image ids or names.")]
) -> None:
    """Delete images no server uses."""
    client = api(ctx)
    for image in images:
        client.delete(path("images", image))
        say(f"deleted image {image}")


@build_app.command("tiny")
def build_tiny_image(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Name to register it under.")] = "tiny",
    public: PublicOption = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Build the tiny test guest (a qcow2 disk and a rootfs) and register it as one image."""
    try:
        from nubes.images.tiny import build_tiny, default_cache_dir
    except ImportError as exc:
        raise CliError(
            f"the tiny image builder is not available in this installation ({exc}); "
            "register an image you have with `nubes image create NAME --file DISK`"
        ) from exc
    client = api(ctx)  # credentials first: fail before a long build, not after
    with tempfile.TemporaryDirectory(prefix="nubes-tiny-") as workdir:
        built = build_tiny(Path(workdir), cache_dir=default_cache_dir(), progress=note)
        image = register(
            client,
            name,
            disk=built.disk,
            rootfs=built.rootfs,
            disk_format=DiskFormat.qcow2,
            public=public,
            properties={},
        )
    _render(image, fmt)
