"""/v1/keypairs (the caller's own; cloud admins may pass ?user=)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Limit, Marker, Name, NameFilter, Out, Strict, next_marker

router = APIRouter(prefix="/v1/keypairs", tags=["keypairs"])

UserQuery = Annotated[
    str | None, Query(max_length=255, description="Cloud admins: another user's keypairs.")
]


class KeypairCreate(Strict):
    name: Name
    public_key: str | None = Field(
        None, max_length=16384, description="Import this OpenSSH public key; omit to generate."
    )
    type: Literal["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"] = Field(
        "ssh-ed25519", description="Key type to generate (ignored on import)."
    )


class KeypairOut(Out):
    id: str
    name: str
    type: str
    public_key: str
    fingerprint: str
    user_id: str
    project_id: str
    created_at: datetime


class KeypairCreated(KeypairOut):
    private_key: str | None = Field(
        None, description="Only when generated; returned once, never stored."
    )


class KeypairList(BaseModel):
    keypairs: list[KeypairOut]
    next_marker: str | None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeypairCreated)
def create_keypair(body: KeypairCreate, ctx: Ctx, svc: Svc) -> KeypairCreated:
    made = svc.keypairs.create(ctx, body.name, public_key=body.public_key, key_type=body.type)
    return KeypairCreated(
        private_key=made.private_key, **KeypairOut.model_validate(made.keypair).model_dump()
    )


@router.get("", response_model=KeypairList)
def list_keypairs(
    ctx: Ctx,
    svc: Svc,
    user: UserQuery = None,
    name: NameFilter = None,
    limit: Limit = None,
    marker: Marker = None,
) -> KeypairList:
    rows = svc.keypairs.list_keypairs(ctx, user=user, name=name, limit=limit, marker=marker)
    return KeypairList(
        keypairs=[KeypairOut.model_validate(r) for r in rows],
        next_marker=next_marker(rows, limit, key="name"),
    )


@router.get("/{name}", response_model=KeypairOut)
def show_keypair(name: str, ctx: Ctx, svc: Svc, user: UserQuery = None) -> object:
    return svc.keypairs.get(ctx, name, user=user)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_keypair(name: str, ctx: Ctx, svc: Svc, user: UserQuery = None) -> None:
    svc.keypairs.delete(ctx, name, user=user)
