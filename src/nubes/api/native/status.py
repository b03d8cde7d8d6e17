"""/v1/status: what this controller is, and anything wrong, for `nubes status`."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter
from pydantic import BaseModel

import nubes
from nubes.api.deps import Ctx, Svc
from nubes.identity import policy
from nubes.store.health import report

router = APIRouter(tags=["status"])


class DatabaseOut(BaseModel):
    engine: str
    url: str
    revision: str | None
    head: str | None
    reachable: bool


class StatusOut(BaseModel):
    version: str
    pid: int
    state_dir: str
    public_url: str
    uptime_seconds: float
    database: DatabaseOut
    counts: dict[str, int]
    problems: list[str]


@router.get("/v1/status", response_model=StatusOut)
def show_status(ctx: Ctx, svc: Svc) -> StatusOut:
    policy.enforce(ctx, "identity:status:show")
    store = report(svc.db)
    return StatusOut(
        version=nubes.__version__,
        pid=os.getpid(),
        state_dir=str(svc.settings.state_dir),
        public_url=svc.settings.effective_public_url,
        uptime_seconds=round(time.time() - svc.started_at, 1),
        database=DatabaseOut(
            engine=store.engine,
            url=store.url,
            revision=store.revision,
            head=store.head,
            reachable=store.reachable,
        ),
        counts=store.counts,
        problems=store.problems,
    )
