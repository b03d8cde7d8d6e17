"""Wiring: the services one controller process uses, built once from the settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nubes.compute.flavors import FlavorService
from nubes.compute.instances import InstanceService
from nubes.compute.keypairs import KeypairService
from nubes.compute.notify import Notifier
from nubes.config import Settings
from nubes.hosts.service import HostService
from nubes.identity.auth import AuthService
from nubes.identity.core import IdentityCore
from nubes.identity.credentials import CredentialService
from nubes.identity.projects import ProjectService
from nubes.identity.quota_service import QuotaService
from nubes.identity.users import UserService
from nubes.images.service import ImageService
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
    hosts: HostService
    images: ImageService
    instances: InstanceService
    notifier: Notifier
    started_at: float = field(default_factory=time.time)
    #: name of each controller loop → time of its last successful run (for `service list`)
    loops: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, db: Database | None = None) -> Services:
        db = db or Database(settings.effective_database_url)
        core = IdentityCore.build(db, settings)
        notifier = Notifier()
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
            hosts=HostService(core),
            images=ImageService(core),
            instances=InstanceService(core, notifier),
            notifier=notifier,
        )
