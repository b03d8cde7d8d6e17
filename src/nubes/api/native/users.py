"""/v1/users"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field, computed_field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Limit, Marker, Name, NameFilter, Out, Strict, next_marker

router = APIRouter(prefix="/v1/users", tags=["users"])

Password = Annotated[str, Field(min_length=1, max_length=4096)]
Email = Annotated[str, Field(max_length=255)]


class UserCreate(Strict):
    name: Name
    password: Password
    email: Email = ""
    enabled: bool = True
    project: str | None = Field(
        None, max_length=255, description="Default project; the user gets `role` on it."
    )
    role: Literal["admin", "member", "reader"] | None = None


class UserUpdate(Strict):
    name: Name | None = None
    password: Password | None = None
    email: Email | None = None
    enabled: bool | None = None
    default_project: str | None = Field(None, max_length=255)


class PasswordChange(Strict):
    original_password: Password
    password: Password


class UserOut(Out):
    id: str
    name: str
    email: str
    enabled: bool
    default_project_id: str | None
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime
    generation: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> str:
        return "enabled" if self.enabled else "disabled"


class UserList(BaseModel):
    users: list[UserOut]
    next_marker: str | None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserOut)
def create_user(body: UserCreate, ctx: Ctx, svc: Svc) -> object:
    return svc.users.create(
        ctx,
        body.name,
        body.password,
        email=body.email,
        enabled=body.enabled,
        project=body.project,
        role=body.role,
    )


@router.get("", response_model=UserList)
def list_users(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    status: Annotated[Literal["enabled", "disabled"] | None, Query()] = None,
    project: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = None,
    marker: Marker = None,
) -> UserList:
    enabled = None if status is None else status == "enabled"
    rows = svc.users.list_users(
        ctx, name=name, enabled=enabled, project=project, limit=limit, marker=marker
    )
    return UserList(
        users=[UserOut.model_validate(r) for r in rows], next_marker=next_marker(rows, limit)
    )


@router.get("/{user}", response_model=UserOut)
def show_user(user: str, ctx: Ctx, svc: Svc) -> object:
    return svc.users.get(ctx, user)


@router.patch("/{user}", response_model=UserOut)
def update_user(user: str, body: UserUpdate, ctx: Ctx, svc: Svc) -> object:
    return svc.users.update(ctx, user, body.model_dump(exclude_unset=True, exclude_none=True))


@router.post("/{user}/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(user: str, body: PasswordChange, ctx: Ctx, svc: Svc) -> None:
    svc.users.change_own_password(ctx, user, body.original_password, body.password)


@router.delete("/{user}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(user: str, ctx: Ctx, svc: Svc) -> None:
    svc.users.delete(ctx, user)


@router.delete("/{user}/tokens", status_code=status.HTTP_204_NO_CONTENT)
def revoke_user_tokens(user: str, ctx: Ctx, svc: Svc) -> None:
    """Revoke every token of the user issued until now."""
    svc.users.revoke_tokens(ctx, user)
