"""Wiring: the services one controller process uses, built once from the settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nubes.compute.flavors import FlavorService
from nubes.compute.keypairs import KeypairService
from nubes.config import Settings
from nubes.identity.auth import AuthService
from nubes.identity.core import IdentityCore
from nubes.identity.credentials import CredentialService
from nubes.identity.projects import ProjectService
from nubes.identity.quota_service import QuotaService
from nubes.identity.users import UserService
from nubes.store.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    core: IdentityCore
    auth: AuthService
    projects: ProjectService
    users: UserService
    credentials: CredentialService
    quotas: QuotaService
    flavors: FlavorService
    keypairs: KeypairService
    started_at: float = field(default_factory=time.time)

    @classmethod
    def build(cls, settings: Settings, db: Database | None = None) -> Services:
        db = db or Database(settings.effective_database_url)
        core = IdentityCore.build(db, settings)
        return cls(
            settings=settings,
            db=db,
            core=core,
            auth=AuthService(core),
            projects=ProjectService(core),
            users=UserService(core),
            credentials=CredentialService(core),
            quotas=QuotaService(core),
            flavors=FlavorService(core),
            keypairs=KeypairService(core),
        )
