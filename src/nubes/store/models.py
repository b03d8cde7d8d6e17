"""The tables. The schema is created and changed only by the Alembic migrations in
``nubes/store/migrations``; a test checks these models and the migrations agree.

Rows that race carry a ``generation`` column (see :mod:`nubes.store.cas`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored naive-UTC (SQLite has no zones) and read back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Versioned:
    """Optimistic concurrency: every committed change bumps ``generation``."""

    generation: Mapped[int] = mapped_column(Integer, default=1)


class Project(Base, Timestamped, Versioned):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin_project: Mapped[bool] = mapped_column(Boolean, default=False)


class User(Base, Timestamped, Versioned):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(255), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    default_project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), default=None
    )
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoleAssignment(Base):
    __tablename__ = "role_assignments"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TokenKey(Base):
    """Fernet keys shared by every controller; the highest ``serial`` below staged is primary."""

    __tablename__ = "token_keys"

    serial: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(String(64))
    staged: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TokenRevocation(Base):
    """Revocation events (Keystone's idea): one token, or every token of a user or project
    issued before a moment."""

    __tablename__ = "token_revocations"
    __table_args__ = (
        Index("ix_token_revocations_audit_id", "audit_id"),
        Index("ix_token_revocations_user_id", "user_id"),
        Index("ix_token_revocations_project_id", "project_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    audit_id: Mapped[str | None] = mapped_column(String(32), default=None)
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    project_id: Mapped[str | None] = mapped_column(String(32), default=None)
    issued_before: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Ec2Credential(Base):
    __tablename__ = "ec2_credentials"

    access: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApplicationCredential(Base):
    __tablename__ = "application_credentials"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    secret_hash: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    roles: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuotaLimit(Base):
    """A project's override of a default limit."""

    __tablename__ = "quota_limits"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class QuotaUsage(Base):
    """What is in use, per project (or per user for per-user resources: ``user_id`` set).

    Changed only by a guarded ``UPDATE ... WHERE in_use + n <= limit`` in the same
    transaction as the resource row, so concurrent creates serialise on this row.
    """

    __tablename__ = "quota_usages"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True, default="")
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    in_use: Mapped[int] = mapped_column(BigInteger, default=0)


class Flavor(Base, Timestamped, Versioned):
    __tablename__ = "flavors"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, default=0)
    swap_mb: Mapped[int] = mapped_column(Integer, default=0)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")
    extra_specs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FlavorAccess(Base):
    __tablename__ = "flavor_access"

    flavor_id: Mapped[str] = mapped_column(
        ForeignKey("flavors.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )


class Keypair(Base):
    __tablename__ = "keypairs"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(32))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """The transactional outbox: written in the same transaction as the change it records."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_resource", "resource_type", "resource_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(32), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Setting(Base):
    """Small cloud-wide facts (for example when the cloud was initialised)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Counter(Base):
    """Monotonic counters (host names node-1, node-2, …), bumped with a guarded UPDATE."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class HostJoinToken(Base):
    """A token a new compute node presents to join. Only a hash of its secret is kept."""

    __tablename__ = "host_join_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    secret_hash: Mapped[str] = mapped_column(String(64))
    uses_left: Mapped[int] = mapped_column(Integer, default=1)
    expires_at: Mapped[datetime] = mapped_column()
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Host(Base, Timestamped, Versioned):
    """A compute node. Allocations are changed only by compare-and-swap on ``generation``,
    so two concurrent placements can never overbook it."""

    __tablename__ = "hosts"
    #: the scheduler's snapshot refreshes only the hosts changed since it last looked
    __table_args__ = (Index("ix_hosts_updated_at", "updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="init")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    address: Mapped[str] = mapped_column(String(255), default="")
    driver: Mapped[str] = mapped_column(String(16))
    arch: Mapped[str] = mapped_column(String(16), default="x86_64")
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    ram_mb: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    allocated_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    allocated_ram_mb: Mapped[int] = mapped_column(Integer, default=0)
    allocated_disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    credential_hash: Mapped[str] = mapped_column(String(64))
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    #: per-host overrides of the allocation ratios and instance cap (None: aggregate, then
    #: the cloud's default)
    cpu_allocation_ratio: Mapped[float | None] = mapped_column(Float, default=None)
    ram_allocation_ratio: Mapped[float | None] = mapped_column(Float, default=None)
    disk_allocation_ratio: Mapped[float | None] = mapped_column(Float, default=None)
    max_instances: Mapped[int | None] = mapped_column(Integer, default=None)
    #: instances placed here and not yet deleted (moves with allocated_*, under the same CAS)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    #: probe name → what went wrong on its last run (bad output, timeout, crash)
    probe_errors: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics_at: Mapped[datetime | None] = mapped_column(default=None)


class Image(Base, Timestamped):
    """Minimal image records (the full image service is a later issue). One image may carry a
    disk file (VMs) and a rootfs tarball (containers)."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64), index=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    disk_format: Mapped[str] = mapped_column(String(16), default="qcow2")
    container_format: Mapped[str] = mapped_column(String(16), default="bare")
    disk_path: Mapped[str | None] = mapped_column(Text, default=None)
    disk_checksum: Mapped[str | None] = mapped_column(String(64), default=None)
    disk_size: Mapped[int] = mapped_column(BigInteger, default=0)
    rootfs_path: Mapped[str | None] = mapped_column(Text, default=None)
    rootfs_checksum: Mapped[str | None] = mapped_column(String(64), default=None)
    rootfs_size: Mapped[int] = mapped_column(BigInteger, default=0)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Instance(Base, Timestamped, Versioned):
    """A VM or container. ``desired_power`` is the API's wish; ``state`` and
    ``observed_power`` are what the agent reports; ``task`` is the one action in flight."""

    __tablename__ = "instances"
    __table_args__ = (Index("ix_instances_host_state", "host_id", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64), index=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(32))
    flavor_id: Mapped[str] = mapped_column(String(64))
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[str] = mapped_column(String(36))
    image_kind: Mapped[str] = mapped_column(String(16))
    keypair_name: Mapped[str | None] = mapped_column(String(64), default=None)
    public_key: Mapped[str | None] = mapped_column(Text, default=None)
    user_data: Mapped[str | None] = mapped_column(Text, default=None)
    instance_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    host_id: Mapped[str | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL"), default=None, index=True
    )
    state: Mapped[str] = mapped_column(String(16), default="pending")
    desired_power: Mapped[str] = mapped_column(String(16), default="running")
    observed_power: Mapped[str] = mapped_column(String(16), default="absent")
    task: Mapped[str | None] = mapped_column(String(32), default=None)
    task_deadline: Mapped[datetime | None] = mapped_column(default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    console: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    launched_at: Mapped[datetime | None] = mapped_column(default=None)
    #: what the user asked of placement: a zone, REQUIREMENTS and RANK expressions
    availability_zone: Mapped[str | None] = mapped_column(String(64), default=None)
    requirements: Mapped[str | None] = mapped_column(Text, default=None)
    rank: Mapped[str | None] = mapped_column(Text, default=None)
    #: attach an ISO 9660 config drive (label config-2) carrying metadata and user data
    config_drive: Mapped[bool] = mapped_column(Boolean, default=False)


class ConsoleLog(Base):
    """The tail of an instance's console, as last sent by its agent."""

    __tablename__ = "console_logs"

    instance_id: Mapped[str] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Aggregate(Base, Timestamped, Versioned):
    """A set of hosts with metadata (matched against flavor extra specs, allocation ratio
    overrides) and optionally an availability zone: a zone is an aggregate's name for users."""

    __tablename__ = "aggregates"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    availability_zone: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    aggregate_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)


class AggregateHost(Base):
    __tablename__ = "aggregate_hosts"

    aggregate_id: Mapped[str] = mapped_column(
        ForeignKey("aggregates.id", ondelete="CASCADE"), primary_key=True
    )
    host_id: Mapped[str] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ServerGroup(Base):
    """Instances placed together (affinity) or apart (anti-affinity), hard or soft."""

    __tablename__ = "server_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServerGroupMember(Base):
    __tablename__ = "server_group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("server_groups.id", ondelete="CASCADE"), primary_key=True
    )
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True, unique=True
    )


# networking (Neutron's records; ``project_id`` is a plain string there, as in Neutron, so
# network resources never make a project impossible to delete and may outlive it) ------------


class Network(Base, Timestamped, Versioned):
    """A layer-2 network. ``segmentation_id`` (a VNI or VLAN id) is unique per type and
    physical network under the constraint below: the database, not a check, keeps two networks
    off one segment. ``physical_network`` is "" for local and vxlan networks."""

    __tablename__ = "networks"
    __table_args__ = (UniqueConstraint("network_type", "physical_network", "segmentation_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64), index=True)
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    router_external: Mapped[bool] = mapped_column(Boolean, default=False)
    network_type: Mapped[str] = mapped_column(String(16))
    physical_network: Mapped[str] = mapped_column(String(64), default="")
    segmentation_id: Mapped[int | None] = mapped_column(Integer, default=None)
    mtu: Mapped[int] = mapped_column(Integer)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)


class Subnet(Base, Timestamped, Versioned):
    """An address range on a network. ``allocation_pools`` is a list of [start, end];
    ``host_routes`` a list of [destination, nexthop]."""

    __tablename__ = "subnets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64), index=True)
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    allocation_pools: Mapped[list[Any]] = mapped_column(JSON, default=list)
    dns_nameservers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    host_routes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)


class Port(Base, Timestamped, Versioned):
    """A port on a network: a MAC (unique per network), fixed IPs (rows of
    :class:`IpAllocation`), security groups, and what it is plugged into."""

    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64), default="", index=True)
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    mac_address: Mapped[str] = mapped_column(String(17))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    #: compute | network:dhcp | network:router_interface | network:router_gateway |
    #: network:floatingip | "" (free) | anything a user put there
    device_owner: Mapped[str] = mapped_column(String(64), default="")
    device_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    #: the binding host (Neutron's binding:host_id)
    host_id: Mapped[str | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL"), default=None, index=True
    )
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: [{"ip_address": ..., "mac_address": ...}]
    allowed_address_pairs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    dns_name: Mapped[str] = mapped_column(String(64), default="")
    #: made for an instance (deleted with it), rather than made by a user and claimed
    auto_delete: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the NIC's position on its instance (eth0, eth1, ...)
    device_index: Mapped[int | None] = mapped_column(Integer, default=None)


class IpAllocation(Base):
    """One address of a subnet, held by a port or cooling down after release.

    The primary key (subnet, address) is what makes allocation safe under concurrency: two
    transactions can both pick an address, only one can insert it. A released address keeps its
    row with ``port_id`` NULL until ``cooling_until``, so it is not handed out again at once."""

    __tablename__ = "ip_allocations"

    #: no cascade: a subnet goes only once its cooling rows are removed and no port holds an
    #: address, so a racing allocation makes the delete fail instead of vanishing with it
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    port_id: Mapped[str | None] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), default=None, index=True
    )
    cooling_until: Mapped[datetime | None] = mapped_column(default=None)


class SecurityGroup(Base, Timestamped, Versioned):
    __tablename__ = "security_groups"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str] = mapped_column(Text, default="")


class SecurityGroupRule(Base):
    """One allow rule. ``protocol`` None matches any; ``remote_group_id`` matches the addresses
    of that group's member ports."""

    __tablename__ = "security_group_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    direction: Mapped[str] = mapped_column(String(8))
    ethertype: Mapped[str] = mapped_column(String(8), default="IPv4")
    protocol: Mapped[str | None] = mapped_column(String(16), default=None)
    port_range_min: Mapped[int | None] = mapped_column(Integer, default=None)
    port_range_max: Mapped[int | None] = mapped_column(Integer, default=None)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64), default=None)
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PortSecurityGroup(Base):
    __tablename__ = "port_security_groups"

    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id"), primary_key=True, index=True
    )


class Router(Base, Timestamped, Versioned):
    """A router; its interfaces and gateway are ports (device_owner network:router_interface
    and network:router_gateway, device_id the router), bound to the router's host."""

    __tablename__ = "routers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64), index=True)
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    external_network_id: Mapped[str | None] = mapped_column(
        ForeignKey("networks.id"), default=None, index=True
    )
    enable_snat: Mapped[bool] = mapped_column(Boolean, default=True)
    host_id: Mapped[str | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL"), default=None, index=True
    )


class FloatingIp(Base, Timestamped, Versioned):
    """An address on an external network (held by a network:floatingip port), optionally
    mapped to one fixed address of a port behind a router."""

    __tablename__ = "floating_ips"
    __table_args__ = (UniqueConstraint("port_id", "fixed_ip_address"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    floating_network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    floating_port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"), unique=True)
    floating_ip_address: Mapped[str] = mapped_column(String(64))
    port_id: Mapped[str | None] = mapped_column(
        ForeignKey("ports.id", ondelete="SET NULL"), default=None, index=True
    )
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64), default=None)
    router_id: Mapped[str | None] = mapped_column(
        ForeignKey("routers.id", ondelete="SET NULL"), default=None, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
