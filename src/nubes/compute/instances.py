"""Instances: create (quota + placement + record in one transaction), actions, delete, and
the other half of the loop — what agents report.

Desired state (``desired_power``: running | stopped | deleted, and ``task``: the one action in
flight) is written here by the API; observed state (``observed_power``) and the lifecycle
``state`` move only when an agent reports, along ``nubes.domain.states.INSTANCE``. Every task
has a deadline; :meth:`InstanceService.expire_tasks` turns an overdue one into ``error`` with a
reason, so nothing stays in a transitional state forever (a dead agent or controller included).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, insert, inspect, or_, select
from sqlalchemy.orm import Session

from nubes.compute.flavors import find_flavor
from nubes.compute.metadata import hostname_of
from nubes.compute.notify import Notifier
from nubes.compute.placement import HostChange, HostSnapshots, claim, release, scheduler_config
from nubes.compute.server_groups import ServerGroupService, find_group, group_view, remove_member
from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, GenerationConflict, InvalidInput, NotFound
from nubes.domain.states import INSTANCE
from nubes.hosts.aggregates import zone_names
from nubes.identity import policy, quotas
from nubes.identity.core import IdentityCore
from nubes.network.instance_ports import (
    NicRequest,
    allocate_instance_ports,
    bind_instance_ports,
    default_network,
    release_instance_ports,
    set_instance_ports_status,
)
from nubes.scheduler import (
    ExpressionError,
    Request,
    ServerGroupView,
    parse_rank,
    parse_requirements,
)
from nubes.scheduler.expr import Expression
from nubes.store import events
from nubes.store.cas import update_if
from nubes.store.models import ConsoleLog, Host, Image, Instance, Keypair, ServerGroup, utcnow
from nubes.store.query import paginate, table_of

log = logging.getLogger("nubes.compute")

#: The order an instance passes through on its way up; reports may skip steps, the record
#: does not (each step is a legal transition and an event).
BOOT_PATH = ("pending", "scheduled", "building", "booting", "running")
ACTIONS = {
    # action: (states it is allowed from, desired power, next state)
    "start": (("stopped",), "running", "booting"),
    "stop": (("running",), "stopped", "stopping"),
    "reboot": (("running",), "running", "rebooting"),
    "reboot_hard": (("running",), "running", "rebooting"),
}
MAX_USER_DATA = 65536
#: flavor extra specs carrying the flavor's own REQUIREMENTS and RANK (OpenNebula's
#: SCHED_REQUIREMENTS / SCHED_RANK); their namespace keeps them from aggregate matching
FLAVOR_REQUIREMENTS = "sched:requirements"
FLAVOR_RANK = "sched:rank"
MAX_CONSOLE = 65536


_COLUMNS = frozenset(inspect(Instance).column_attrs.keys())
_INSERT = insert(table_of(Instance)).values(
    {column: bindparam(key) for key, column in inspect(Instance).columns.items()}
)
#: an instance's columns by id, read as plain Core (made into a detached row, see _detached)
_BY_ID = select(*(column.label(key) for key, column in inspect(Instance).columns.items())).where(
    table_of(Instance).c.id == bindparam("instance_id")
)
_LIVE = select(Instance).where(Instance.state != "deleted")
#: _find's lookups, built once: (by id, by name) for a cloud admin, and within a project
_FIND_ANY = (
    _LIVE.where(Instance.id == bindparam("ref")),
    _LIVE.where(Instance.name == bindparam("ref")).limit(2),
)
_FIND_OWN = tuple(stmt.where(Instance.project_id == bindparam("project_id")) for stmt in _FIND_ANY)
#: what the agents' desired state needs of each instance's image
_IMAGE_FILES = ("disk_format", "disk_checksum", "disk_size", "rootfs_checksum", "rootfs_size")
#: the host's instances with their images' files, as plain columns (no ORM loading)
_ON_HOST_WITH_IMAGES = (
    select(
        *(getattr(Instance, key).label(key) for key in sorted(_COLUMNS)),
        Image.id.label("image_found"),
        *(getattr(Image, key).label(f"image_{key}") for key in _IMAGE_FILES),
    )
    .outerjoin(Image, Image.id == Instance.image_id)
    .where(Instance.host_id == bindparam("host_id"), Instance.state != "deleted")
    .order_by(Instance.created_at)
)


@dataclass(frozen=True)
class ImageFiles:
    """An image as the agents' desired state names it: its files, their format and sums."""

    id: str
    disk_format: str
    disk_checksum: str | None
    disk_size: int
    rootfs_checksum: str | None
    rootfs_size: int


#: an image by id, else the newest of that name, in one query (visible ones, or any)
_IMAGE_ANY = (
    select(Image)
    .where(or_(Image.id == bindparam("ref"), Image.name == bindparam("ref")))
    .order_by((Image.id == bindparam("ref")).desc(), Image.created_at.desc())
    .limit(1)
)
_IMAGE_VISIBLE = _IMAGE_ANY.where(
    or_(Image.visibility == "public", Image.project_id == bindparam("project_id"))
)


def _not_found(ref: str) -> NotFound:
    return NotFound(f"no instance {ref!r}", code="nubes.instance.not_found")


@dataclass(frozen=True)
class Report:
    """What an agent saw of one instance."""

    power: str  # absent | stopped | running | paused | crashed
    phase: str | None = None  # building | booting while it works on a create or start
    completed_task: str | None = None
    error: str | None = None
    console: dict[str, Any] | None = None
    console_log: str | None = None


class InstanceService:
    def __init__(
        self,
        core: IdentityCore,
        notifier: Notifier,
        server_groups: ServerGroupService,
        *,
        tie_start: float = 0.0,
    ) -> None:
        """``tie_start``: where this process's scheduler breaks ties in host-name order
        (:attr:`nubes.scheduler.Config.tie_start`): each worker of a controller its own."""
        self.core = core
        self.notifier = notifier
        self.server_groups = server_groups
        self.snapshots = HostSnapshots(core.settings)
        self.tie_start = tie_start

    # queries ------------------------------------------------------------------------------

    def _find(self, session: Session, ctx: RequestContext, ref: str) -> Instance:
        by_id, by_name = _FIND_ANY if ctx.is_cloud_admin else _FIND_OWN
        params = {"ref": ref, "project_id": ctx.project_id}
        row = session.scalar(by_id, params)
        if row is None:
            matches = list(session.scalars(by_name, params))
            if len(matches) > 1:
                raise Conflict(
                    f"several instances are named {ref!r}; use the id",
                    code="nubes.instance.invalid_state",
                )
            row = matches[0] if matches else None
        if row is None:
            raise _not_found(ref)
        return row

    def list_instances(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        status: str | None = None,
        all_projects: bool = False,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Instance]:
        policy.enforce(ctx, "compute:instance:list", project_id=ctx.project_id)
        stmt = select(Instance)
        if not (ctx.is_cloud_admin and all_projects):
            stmt = stmt.where(Instance.project_id == ctx.project_id)
        stmt = (
            stmt.where(Instance.state == status)
            if status
            else stmt.where(Instance.state != "deleted")
        )
        if name is not None:
            stmt = stmt.where(Instance.name == name)
        with self.core.db.read() as session:
            return paginate(
                session,
                stmt,
                Instance,
                limit=limit,
                marker=marker,
                sort_column=Instance.created_at,
            )

    def get(self, ctx: RequestContext, ref: str) -> Instance:
        with self.core.db.read() as session:
            row = self._find(session, ctx, ref)
        policy.enforce(ctx, "compute:instance:show", project_id=row.project_id)
        return row

    def console_log(self, ctx: RequestContext, ref: str) -> str:
        with self.core.db.read() as session:
            row = self._find(session, ctx, ref)
            policy.enforce(ctx, "compute:instance:console", project_id=row.project_id)
            console = session.get(ConsoleLog, row.id)
            return console.text if console else ""

    # create -------------------------------------------------------------------------------

    def create(
        self,
        ctx: RequestContext,
        name: str,
        *,
        flavor: str,
        image: str,
        keypair: str | None = None,
        user_data: str | None = None,
        metadata: dict[str, str] | None = None,
        count: int = 1,
        zone: str | None = None,
        group: str | None = None,
        requirements: str | None = None,
        rank: str | None = None,
        config_drive: bool = False,
        networks: Sequence[NicRequest] | str = "auto",
    ) -> list[Instance]:
        """Record, charge and place ``count`` instances in one transaction, the batch in one
        scheduler pass. An instance no host can take is created in ``error`` with the reason
        (as Nova does), so the user sees why; a cloud admin's reason names the hosts."""
        policy.enforce(ctx, "compute:instance:create", project_id=ctx.project_id)
        if not 1 <= count <= 100:
            raise InvalidInput("count: 1 to 100")
        if user_data is not None and len(user_data.encode()) > MAX_USER_DATA:
            raise InvalidInput(f"user_data: at most {MAX_USER_DATA} bytes")
        if isinstance(networks, str) and networks not in ("auto", "none"):
            raise InvalidInput("networks: 'auto', 'none' or a list of NICs")
        if not isinstance(networks, str) and count > 1 and any(n.port for n in networks):
            raise InvalidInput("networks: a port can be given to one instance only (count 1)")
        own_requirements = _parse("requirements", requirements, parse_requirements)
        own_rank = _parse("rank", rank, parse_rank)
        assert ctx.project_id is not None
        assert ctx.user_id is not None
        settings = self.core.settings
        placed_hosts: set[str] = set()
        # Read what the write needs before taking the write lock every writer of every worker
        # queues on. The instance copies what it uses of them (sizes, key): a flavor, image or
        # keypair deleted meanwhile is as if deleted just after this create (no foreign key).
        self.snapshots.prefetch(self.core.db.read)
        self.snapshots.settle()
        with self.core.db.read() as session:
            size = find_flavor(session, ctx, flavor)
            img = _find_image(session, ctx, image)
            public_key = None
            if keypair is not None:
                key = session.scalar(
                    select(Keypair).where(Keypair.user_id == ctx.user_id, Keypair.name == keypair)
                )
                if key is None:
                    raise NotFound(f"no keypair {keypair!r}", code="nubes.keypair.not_found")
                public_key = key.public_key
        with self.core.db.transaction() as session, events.batch(session):
            quotas.charge(
                session,
                ctx.project_id,
                {"instances": count, "cores": count * size.vcpus, "ram": count * size.ram_mb},
                settings.default_quotas,
            )
            if zone is not None and zone not in zone_names(session, settings):
                known = ", ".join(sorted(zone_names(session, settings)))
                raise NotFound(
                    f"no availability zone {zone!r} (zones: {known})",
                    code="nubes.zone.not_found",
                )
            group_row = (
                find_group(session, ctx.project_id, group, lock=True) if group is not None else None
            )
            request = Request(
                vcpus=size.vcpus,
                ram_mb=size.ram_mb,
                disk_gb=size.disk_gb,
                image_kinds=_image_kinds(img),
                count=count,
                zone=zone,
                arch=_text(img.properties.get("architecture")),
                hypervisor=_text(img.properties.get("hypervisor_type"))
                or _text(size.extra_specs.get("hypervisor_type")),
                extra_specs={k: str(v) for k, v in size.extra_specs.items()},
                requirements=_both(
                    _parse(
                        "flavor requirements",
                        _text(size.extra_specs.get(FLAVOR_REQUIREMENTS)),
                        parse_requirements,
                    ),
                    own_requirements,
                ),
                rank=own_rank
                or _parse("flavor rank", _text(size.extra_specs.get(FLAVOR_RANK)), parse_rank),
                group=_group_view(session, group_row),
            )
            nics = _nics(session, ctx, networks)
            # Ports and group members refer to the row: then it goes in at once, through the
            # session. Else it goes in once placed, with one plain INSERT (no UPDATE of what
            # placement decided, no unit of work).
            insert_now = bool(nics) or group_row is not None
            now = utcnow()
            rows: list[Instance] = []
            for index in range(count):
                row = Instance(
                    name=name if count == 1 else f"{name}-{index + 1}",
                    project_id=ctx.project_id,
                    user_id=ctx.user_id,
                    flavor_id=size.id,
                    vcpus=size.vcpus,
                    ram_mb=size.ram_mb,
                    disk_gb=size.disk_gb,
                    image_id=img.id,
                    image_kind="disk",
                    keypair_name=keypair,
                    public_key=public_key,
                    user_data=user_data,
                    instance_metadata=metadata or {},
                    availability_zone=zone,
                    requirements=requirements,
                    rank=rank,
                    config_drive=config_drive,
                    task="create",
                    task_deadline=utcnow()
                    + timedelta(seconds=settings.instance_boot_timeout_seconds),
                    created_at=now,
                    updated_at=now,
                )
                _fill_defaults(row)  # which an INSERT would only fill in at flush
                if insert_now:
                    session.add(row)
                    session.flush()
                events.record(
                    session,
                    ctx,
                    "instance.created",
                    "instance",
                    row.id,
                    project_id=row.project_id,
                    payload={"name": row.name},
                )
                if group_row is not None:
                    self.server_groups.add_member(session, ctx, group_row.id, row.id)
                if nics:
                    allocate_instance_ports(
                        session, ctx, row.id, hostname_of(row), nics, settings=settings
                    )
                rows.append(row)
            outcome = claim(
                session, self.snapshots, request, scheduler_config(settings, self.tie_start)
            )
            unplaced = outcome.unplaced
            for row, placement in zip(rows, outcome.placements, strict=True):
                if placement is None:
                    reason = "every suitable host changed while placing; try again"
                    if unplaced is not None:
                        users = unplaced.user_message()
                        reason = unplaced.admin_message() if ctx.is_cloud_admin else users
                    self._fail(session, row, reason)
                else:
                    row.host_id = placement.host_id
                    row.image_kind = placement.image_kind
                    if nics:
                        bind_instance_ports(
                            session, row.id, placement.host_id, ctx=ctx, settings=settings
                        )
                    self._move(session, row, "scheduled", payload={"host": placement.host_name})
                    placed_hosts.add(placement.host_id)
            if not insert_now:
                session.execute(_INSERT, [_columns(row) for row in rows])
        self.notifier.changed(placed_hosts)
        return rows

    # actions ------------------------------------------------------------------------------

    def action(self, ctx: RequestContext, ref: str, action: str) -> Instance:
        if action not in ACTIONS:
            raise InvalidInput(f"action: one of {', '.join(ACTIONS)}")
        allowed_from, desired, next_state = ACTIONS[action]
        with self.core.db.transaction() as session:
            row = self._find(session, ctx, ref)
            policy.enforce(ctx, "compute:instance:action", project_id=row.project_id)
            if row.task is not None:
                raise Conflict(
                    f"instance {row.name!r} is busy with {row.task!r}; wait for it to finish",
                    code="nubes.instance.busy",
                )
            if row.state not in allowed_from:
                raise Conflict(
                    f"cannot {action.replace('_', ' ')} instance {row.name!r} while it is "
                    f"{row.state} (only when {' or '.join(allowed_from)})",
                    code="nubes.instance.invalid_state",
                )
            row.desired_power, row.task = desired, action
            row.task_deadline = utcnow() + timedelta(
                seconds=self.core.settings.instance_action_timeout_seconds
            )
            self._move(session, row, next_state, payload={"action": action})
        self.notifier.changed({row.host_id} if row.host_id else set())
        return row

    def delete(self, ctx: RequestContext, ref: str) -> Instance:
        """Allowed in any state, even with another action in flight (delete wins)."""
        released: list[HostChange] = []
        with self.core.db.transaction() as session, events.batch(session):
            row = self._find(session, ctx, ref)
            policy.enforce(ctx, "compute:instance:delete", project_id=row.project_id)
            if row.state == "deleting":
                return row
            before = _columns(row)
            row.desired_power, row.task = "deleted", "delete"
            row.task_deadline = utcnow() + timedelta(
                seconds=self.core.settings.instance_action_timeout_seconds
            )
            with session.no_autoflush:
                self._move(session, row, "deleting")
                if row.host_id is None:
                    self._finish_delete(session, row, released)
                _save(session, row, before)
        self.snapshots.applied(released)
        self.notifier.changed({row.host_id} if row.host_id else set())
        return row

    # the agent's side ---------------------------------------------------------------------

    @staticmethod
    def desired_with_images(
        connection: Connection, host_id: str
    ) -> list[tuple[Instance, ImageFiles]]:
        """The host's live instances, oldest first (detached rows), each
        with its image's files, in one query on the caller's connection: every agent reads
        this often, and an ORM session and its loading cost more than the query."""
        found = []
        for data in connection.execute(_ON_HOST_WITH_IMAGES, {"host_id": host_id}).mappings():
            row = _detached(data)
            if data["image_found"] is None:  # an image in use cannot be deleted
                raise NotFound(
                    f"instance {row.id}: no image {row.image_id}", code="nubes.image.not_found"
                )
            files = {key: data[f"image_{key}"] for key in _IMAGE_FILES}
            found.append((row, ImageFiles(id=row.image_id, **files)))
        return found

    def report(self, host: Host, instance_id: str, report: Report) -> Instance | None:
        """Apply what an agent saw. Returns None when the instance is not (or no longer) this
        host's, which tells the agent to remove it."""
        released: list[HostChange] = []
        row = self._apply_report(host, instance_id, report, released)
        # only now committed: the snapshot may take what the delete gave back
        self.snapshots.applied(released)
        return row

    def _apply_report(
        self, host: Host, instance_id: str, report: Report, released: list[HostChange]
    ) -> Instance | None:
        with self.core.db.transaction() as session, events.batch(session):
            data = session.execute(_BY_ID, {"instance_id": instance_id}).mappings().first()
            if data is None or data["host_id"] != host.id or data["state"] == "deleted":
                return None
            # a detached row: its changes go in one UPDATE at the end, not through the unit
            # of work (none of the statements below reads the instance row)
            row = _detached(data)
            self._observed(session, row, report, released)
            _save(session, row, data)
            return row

    def _observed(
        self, session: Session, row: Instance, report: Report, released: list[HostChange]
    ) -> None:
        row.observed_power = report.power
        if report.console is not None:
            row.console = report.console
        if report.console_log is not None:
            self._store_console(session, row.id, report.console_log)
        if report.error:
            self._fail(session, row, report.error)
            return
        if row.desired_power == "deleted":
            if report.power == "absent":
                self._finish_delete(session, row, released)
            return
        if row.state == "error":
            return
        if row.desired_power == "running":
            if report.power == "running":
                if row.task in ("reboot", "reboot_hard") and report.completed_task != row.task:
                    return
                self._advance(session, row, "running")
                if row.launched_at is None:
                    row.launched_at = utcnow()
                row.task = row.task_deadline = None
                set_instance_ports_status(session, row.id, "ACTIVE")
            elif report.phase in ("building", "booting"):
                self._advance(session, row, report.phase)
        elif row.desired_power == "stopped" and report.power == "stopped":
            self._advance(session, row, "stopped")
            row.task = row.task_deadline = None
            set_instance_ports_status(session, row.id, "DOWN")

    def expire_tasks(self) -> list[str]:
        """Send instances whose task is overdue to ``error``; returns their ids."""
        expired: list[str] = []
        with self.core.db.transaction() as session:
            overdue = session.scalars(
                select(Instance).where(
                    Instance.task_deadline.is_not(None), Instance.task_deadline < utcnow()
                )
            )
            for row in overdue:
                where = (
                    "no host"
                    if row.host_id is None
                    else f"its host (last seen {row.observed_power})"
                )
                self._fail(
                    session,
                    row,
                    f"{row.task} did not finish before its deadline; {where} did not report "
                    "completion. Delete the instance, or check the host (`nubes host list`).",
                )
                expired.append(row.id)
        return expired

    # transitions --------------------------------------------------------------------------

    def _move(
        self, session: Session, row: Instance, new: str, payload: dict[str, Any] | None = None
    ) -> None:
        INSTANCE.check(row.state, new)
        old, row.state = row.state, new
        events.record(
            session,
            RequestContext.system(),
            f"instance.{new}",
            "instance",
            row.id,
            project_id=row.project_id,
            payload={"from": old, **(payload or {})},
        )

    def _advance(self, session: Session, row: Instance, target: str) -> None:
        """Walk the boot path (or stopping → stopped) up to ``target``, one legal step at a
        time; ignore reports that would go backwards."""
        if row.state == target:
            return
        if target == "stopped":
            if row.state == "running":
                self._move(session, row, "stopping")
            if INSTANCE.can(row.state, "stopped"):
                self._move(session, row, "stopped")
            return
        if row.state in ("rebooting", "stopped", "stopping") and target == "running":
            if row.state == "stopped":
                self._move(session, row, "booting")
            if INSTANCE.can(row.state, "running"):
                self._move(session, row, "running")
            return
        if row.state in BOOT_PATH and target in BOOT_PATH:
            for step in BOOT_PATH[BOOT_PATH.index(row.state) + 1 : BOOT_PATH.index(target) + 1]:
                self._move(session, row, step)
            return
        log.info("instance %s: ignoring report %s while %s", row.id, target, row.state)

    def _fail(self, session: Session, row: Instance, reason: str) -> None:
        row.reason = reason
        row.task = row.task_deadline = None
        if row.state != "error" and INSTANCE.can(row.state, "error"):
            self._move(session, row, "error", payload={"reason": reason})

    def _finish_delete(self, session: Session, row: Instance, released: list[HostChange]) -> None:
        """``released`` gets what the host's resources became, for the snapshot once the
        transaction has committed."""
        quotas.release(
            session,
            row.project_id,
            {"instances": 1, "cores": row.vcpus, "ram": row.ram_mb},
        )
        if row.host_id is not None:
            change = release(session, row.host_id, row.vcpus, row.ram_mb, row.disk_gb)
            if change is not None:
                released.append(change)
        remove_member(session, row.id)
        release_instance_ports(session, row.id, settings=self.core.settings)
        row.task = row.task_deadline = None
        self._move(session, row, "deleted")

    def _store_console(self, session: Session, instance_id: str, text: str) -> None:
        text = text[-MAX_CONSOLE:]
        existing = session.get(ConsoleLog, instance_id)
        if existing is None:
            session.add(ConsoleLog(instance_id=instance_id, text=text))
        else:
            existing.text = text


def _fill_defaults(row: Instance) -> None:
    """Give a new row the model's column defaults for what the caller did not set (read from
    the model, so they cannot drift from it)."""
    for key, column in inspect(Instance).columns.items():
        arg = getattr(column.default, "arg", None)
        if column.default is not None and key not in row.__dict__:
            setattr(row, key, arg(None) if callable(arg) else arg)


def _columns(row: Instance) -> dict[str, Any]:
    return {key: getattr(row, key) for key in _COLUMNS}


_NEW_INSTANCE = inspect(Instance).class_manager.new_instance


def _detached(data: Mapping[Any, Any]) -> Instance:
    """An instance row from its columns, outside any session: read and written with plain
    statements on the hot paths (agents' desired state and reports), where the ORM's loading
    and unit of work cost several times the statements. Its columns go straight into its
    ``__dict__`` (loaded, as a query would leave them): the constructor set them one by one
    through the ORM's instrumentation, ten times slower, inside the report's write turn."""
    row = _NEW_INSTANCE()
    row.__dict__.update({key: data[key] for key in _COLUMNS})
    return row


def _save(session: Session, row: Instance, before: Mapping[Any, Any]) -> None:
    """Write the columns of ``row`` that differ from ``before`` (as read) with one UPDATE,
    guarded by the state it was read in (a concurrent change makes this a 409, and the
    transaction, events included, rolls back). A row of the session leaves it, so the commit
    does not write it again."""
    values = {key: getattr(row, key) for key in _COLUMNS if getattr(row, key) != before[key]}
    if row in session:
        session.expunge(row)
    if not values:
        return
    row.updated_at = values["updated_at"] = utcnow()
    if not update_if(session, Instance, row.id, {"state": before["state"]}, values):
        raise GenerationConflict(
            f"instance {row.id} changed while this request handled it; try again"
        )


def _find_image(session: Session, ctx: RequestContext, ref: str) -> Image:
    stmt = _IMAGE_ANY if ctx.is_cloud_admin else _IMAGE_VISIBLE
    row = session.scalar(stmt, {"ref": ref, "project_id": ctx.project_id})
    if row is None:
        raise NotFound(f"no image {ref!r}", code="nubes.image.not_found")
    if row.status != "active":
        raise Conflict(
            f"image {row.name!r} is {row.status}: upload its file first",
            code="nubes.image.invalid",
        )
    return row


def _image_kinds(img: Image) -> tuple[str, ...]:
    kinds = []
    if img.disk_path:
        kinds.append("disk")
    if img.rootfs_path:
        kinds.append("rootfs")
    return tuple(kinds)


def _parse(field: str, text: str | None, parser: Callable[[str], Expression]) -> Expression | None:
    """A REQUIREMENTS or RANK expression, refused at submission with where it went wrong."""
    if text is None or not text.strip():
        return None
    try:
        return parser(text)
    except ExpressionError as exc:
        raise InvalidInput(f"{field}: {exc}") from exc


def _both(first: Expression | None, second: Expression | None) -> Expression | None:
    """A flavor's REQUIREMENTS and the instance's both apply."""
    if first is None or second is None:
        return first or second
    return parse_requirements(f"({first.text}) & ({second.text})")


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _nics(
    session: Session, ctx: RequestContext, networks: Sequence[NicRequest] | str
) -> list[NicRequest]:
    """What each instance of a create gets: the NICs asked for; with "auto" (the default, as
    Nova's), one on the project's network (its only one, else one named ``default``), or
    none when it has no network; with "none", none."""
    if isinstance(networks, str):
        if networks == "none":
            return []
        try:
            return [NicRequest(network=default_network(session, ctx).id)]
        except InvalidInput:
            return []
    return list(networks)


def _group_view(session: Session, group: ServerGroup | None) -> ServerGroupView | None:
    if group is None:
        return None
    view = group_view(session, group.id)
    return ServerGroupView(group.id, group.name, group.policy, view.host_ids)
