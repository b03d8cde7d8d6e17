"""Minimal image registry (Glance semantics come with the image issue): a record, and up to
two files — a bootable disk (qcow2/raw, for VMs) and a rootfs tarball (for containers) — kept
in the controller's image store, ``STATE_DIR/images/<id>/``, with their SHA-256."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import ColumnElement, exists, or_, select, true
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, InvalidInput, NotFound
from nubes.identity import policy
from nubes.identity.core import IdentityCore
from nubes.store import events
from nubes.store.models import Image, Instance
from nubes.store.query import paginate

DISK_FORMATS = ("qcow2", "raw")
FILE_KINDS = ("disk", "rootfs")
CHUNK = 1 << 20


def _not_found(ref: str) -> NotFound:
    return NotFound(f"no image {ref!r}", code="nubes.image.not_found")


class ImageService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core
        self.store = core.settings.state_dir / "images"

    def _visible(self, ctx: RequestContext) -> ColumnElement[bool]:
        if ctx.is_cloud_admin:
            return true()
        return or_(Image.visibility == "public", Image.project_id == ctx.project_id)

    def _find(self, session: Session, ctx: RequestContext, ref: str) -> Image:
        visible = self._visible(ctx)
        row = session.scalar(select(Image).where(Image.id == ref, visible)) or session.scalar(
            select(Image).where(Image.name == ref, visible).order_by(Image.created_at.desc())
        )
        if row is None:
            raise _not_found(ref)
        return row

    def create(
        self,
        ctx: RequestContext,
        name: str,
        *,
        disk_format: str = "qcow2",
        visibility: str = "private",
        properties: dict[str, str] | None = None,
    ) -> Image:
        policy.enforce(ctx, "images:image:create", project_id=ctx.project_id)
        if visibility == "public":
            policy.enforce(ctx, "images:image:publicize")
        if disk_format not in DISK_FORMATS:
            raise InvalidInput(f"disk_format: one of {', '.join(DISK_FORMATS)}")
        assert ctx.project_id is not None
        with self.core.db.transaction() as session:
            row = Image(
                name=name,
                project_id=ctx.project_id,
                visibility=visibility,
                disk_format=disk_format,
                properties=properties or {},
            )
            session.add(row)
            session.flush()
            events.record(session, ctx, "image.created", "image", row.id, project_id=row.project_id)
            return row

    def upload(
        self,
        ctx: RequestContext,
        ref: str,
        kind: str,
        chunks: Iterable[bytes],
        max_bytes: int = 64 << 30,
    ) -> Image:
        """Store one file of an image (streamed), with its checksum; the image becomes active
        once it has at least one file."""
        if kind not in FILE_KINDS:
            raise InvalidInput(f"kind: one of {', '.join(FILE_KINDS)}")
        with self.core.db.read() as session:
            row = self._find(session, ctx, ref)
        policy.enforce(ctx, "images:image:upload", project_id=row.project_id)
        folder = self.store / row.id
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / ("disk" if kind == "disk" else "rootfs.tar.gz")
        tmp = folder / f".{final.name}.upload"
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise InvalidInput(
                            f"file larger than {max_bytes} bytes", code="nubes.image.invalid"
                        )
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise InvalidInput("the file is empty", code="nubes.image.invalid")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        with self.core.db.transaction() as session:
            row = self._find(session, ctx, row.id)
            if kind == "disk":
                row.disk_path, row.disk_checksum, row.disk_size = (
                    str(final),
                    digest.hexdigest(),
                    size,
                )
            else:
                row.rootfs_path, row.rootfs_checksum = str(final), digest.hexdigest()
                row.rootfs_size, row.container_format = size, "tar"
            row.status = "active"
            events.record(
                session,
                ctx,
                "image.uploaded",
                "image",
                row.id,
                project_id=row.project_id,
                payload={"kind": kind, "size": size},
            )
            return row

    def list_images(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Image]:
        policy.enforce(ctx, "images:image:list")
        stmt = select(Image).where(self._visible(ctx))
        if name is not None:
            stmt = stmt.where(Image.name == name)
        with self.core.db.read() as session:
            return paginate(
                session, stmt, Image, limit=limit, marker=marker, sort_column=Image.created_at
            )

    def get(self, ctx: RequestContext, ref: str) -> Image:
        policy.enforce(ctx, "images:image:show")
        with self.core.db.read() as session:
            return self._find(session, ctx, ref)

    def get_for_host(self, image_id: str) -> Image:
        """For agents fetching the files of an image an instance on their host uses."""
        with self.core.db.read() as session:
            row = session.get(Image, image_id)
            if row is None:
                raise _not_found(image_id)
            return row

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            row = self._find(session, ctx, ref)
            policy.enforce(ctx, "images:image:delete", project_id=row.project_id)
            if row.visibility == "public":
                policy.enforce(ctx, "images:image:publicize")
            in_use = session.scalar(
                select(exists().where(Instance.image_id == row.id, Instance.state != "deleted"))
            )
            if in_use:
                raise Conflict(
                    f"image {row.name!r} is used by instances", code="nubes.image.in_use"
                )
            session.delete(row)
            events.record(session, ctx, "image.deleted", "image", row.id, project_id=row.project_id)
        shutil.rmtree(self.store / row.id, ignore_errors=True)


def file_of(image: Image, kind: str) -> Path | None:
    path = image.disk_path if kind == "disk" else image.rootfs_path
    return Path(path) if path else None
