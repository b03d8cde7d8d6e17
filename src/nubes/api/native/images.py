"""/v1/images: minimal records and file upload (the full image service is a later issue)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.from_thread
from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Limit, Marker, Name, NameFilter, Out, Strict, next_marker

router = APIRouter(prefix="/v1/images", tags=["images"])


class ImageCreate(Strict):
    name: Name
    disk_format: Literal["qcow2", "raw"] = "qcow2"
    visibility: Literal["private", "public"] = "private"
    properties: dict[
        Annotated[str, Field(max_length=255)], Annotated[str, Field(max_length=255)]
    ] = Field(default_factory=dict, max_length=100)


class ImageOut(Out):
    id: str
    name: str
    project_id: str
    visibility: str
    status: str
    disk_format: str
    container_format: str
    disk_checksum: str | None
    disk_size: int
    rootfs_checksum: str | None
    rootfs_size: int
    properties: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ImageList(BaseModel):
    images: list[ImageOut]
    next_marker: str | None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ImageOut)
def create_image(body: ImageCreate, ctx: Ctx, svc: Svc) -> object:
    return svc.images.create(
        ctx,
        body.name,
        disk_format=body.disk_format,
        visibility=body.visibility,
        properties=body.properties,
    )


@router.put("/{image}/file", response_model=ImageOut)
def upload_file(
    image: str,
    request: Request,
    ctx: Ctx,
    svc: Svc,
    kind: Annotated[
        Literal["disk", "rootfs"], Query(description="disk (VMs) or rootfs (containers)")
    ] = "disk",
) -> object:
    """Stream the file as the request body (application/octet-stream). Exempt from the
    general body limit; the image store has its own."""
    stream = request.stream()

    def chunks() -> Iterator[bytes]:
        # This handler runs in a worker thread: pull each chunk from the event loop, so the
        # file is written as it arrives and never held whole in memory.
        while True:
            try:
                yield anyio.from_thread.run(stream.__anext__)
            except StopAsyncIteration:
                return

    return svc.images.upload(ctx, image, kind, chunks())


@router.get("", response_model=ImageList)
def list_images(
    ctx: Ctx, svc: Svc, name: NameFilter = None, limit: Limit = None, marker: Marker = None
) -> ImageList:
    rows = svc.images.list_images(ctx, name=name, limit=limit, marker=marker)
    return ImageList(
        images=[ImageOut.model_validate(r) for r in rows], next_marker=next_marker(rows, limit)
    )


@router.get("/{image}", response_model=ImageOut)
def show_image(image: str, ctx: Ctx, svc: Svc) -> object:
    return svc.images.get(ctx, image)


@router.delete("/{image}", status_code=status.HTTP_204_NO_CONTENT)
def delete_image(image: str, ctx: Ctx, svc: Svc) -> None:
    svc.images.delete(ctx, image)
