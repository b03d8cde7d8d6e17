"""Wiring: the services one controller process uses, built once from the settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nubes.compute.flavors import FlavorService
from nubes.compute.instances import InstanceService
from nubes.compute.keypairs import KeypairService
from nubes.compute.notify import Notifier, Peers
from nubes.compute.server_groups import ServerGroupService
from nubes.config import Settings
from nubes.hosts.aggregates import AggregateService
from nubes.hosts.service import HostService
from nubes.identity.auth import AuthService
from nubes.identity.core import IdentityCore
from nubes.identity.credentials import CredentialService
from nubes.identity.projects import ProjectService
from nubes.identity.quota_service import QuotaService
from nubes.identity.users import UserService
from nubes.images.service import ImageService
from nubes.network import configure as configure_network
from nubes.network.floating_ips import FloatingIpService
from nubes.network.networks import NetworkService
from nubes.network.ports import PortService
from nubes.network.routers import RouterService
from nubes.network.security_groups import SecurityGroupService
from nubes.network.subnets import SubnetService
from nubes.store.db import Database

#: the tables ``nubes.network.desired.host_networks`` reads
NETWORK_TABLES = (
    "networks",
    "subnets",
    "ports",
    "ip_allocations",
    "security_groups",
    "security_group_rules",
    "port_security_groups",
    "routers",
    "floating_ips",
)


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
    aggregates: AggregateService
    server_groups: ServerGroupService
    networks: NetworkService
    subnets: SubnetService
    ports: PortService
    security_groups: SecurityGroupService
    routers: RouterService
    floating_ips: FloatingIpService
    started_at: float = field(default_factory=time.time)
    #: name of each controller loop → time of its last successful run (for `service list`)
    loops: dict[str, float] = field(default_factory=dict)
    #: ends what these services registered on the database (see :meth:`close`)
    stop_watching: Callable[[], None] = lambda: None

    @classmethod
    def build(
        cls, settings: Settings, db: Database | None = None, peers: Peers | None = None
    ) -> Services:
        """``peers``: the other worker processes of this controller, told of every change."""
        db = db or Database(settings.effective_database_url)
        core = IdentityCore.build(db, settings)
        notifier = Notifier(peers)
        server_groups = ServerGroupService(core)
        # a change to anything a host's networking is made of wakes the agents' long polls
        stop_watching = db.watch(NETWORK_TABLES, notifier.changed_all)
        configure_network(settings)
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
            instances=InstanceService(
                core, notifier, server_groups, tie_start=peers.share if peers else 0.0
            ),
            notifier=notifier,
            aggregates=AggregateService(core),
            server_groups=server_groups,
            networks=NetworkService(core),
            subnets=SubnetService(core),
            ports=PortService(core),
            security_groups=SecurityGroupService(core),
            routers=RouterService(core),
            floating_ips=FloatingIpService(core),
            stop_watching=stop_watching,
        )

    def close(self) -> None:
        """Detach from the database, which may outlive these services (tests share one):
        its commits no longer reach this notifier."""
        self.stop_watching()
