"""The LXC driver: privileged system containers driven with the lxc-* tools.

One container per instance, named ``nubes-<id>`` in the lxcpath ``<state_dir>/containers``
(:mod:`.layout`). Its root is an overlay of the image's cached rootfs (:mod:`.rootfs`, read
only, shared) and a per-instance upper directory; LXC mounts the overlay inside the
container's own mount namespace, so the host never holds a mount for a container. Limits,
console, signals and network are in the rendered config (:mod:`.config`).

Observed power (``lxc-info --state``)::

    RUNNING, THAWED, STARTING, STOPPING  -> running   (the last two with a detail)
    FROZEN, FREEZING                     -> paused
    STOPPED                              -> stopped, or crashed when the ``desired`` marker
                                            still says running: it stopped without being
                                            asked (guest poweroff from inside, init died)
    ABORTING                             -> crashed
    no instance dir / no config yet      -> absent

The ``desired`` file holds what the driver was last asked for (``running`` on start and
reboot, ``stopped`` on create, stop and destroy). Nothing else is kept in memory, so a new
driver on the same ``state_dir`` (a restarted agent) sees exactly what the old one saw.

Options: ``start_timeout`` (s, default 30) to reach RUNNING; ``reboot_timeout`` (s, default
30) for a soft reboot before it falls back to a hard one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from nubes.agent import configdrive
from nubes.agent.hypervisors.base import (
    Capabilities,
    Hypervisor,
    HypervisorError,
    ImageKind,
    InstanceSpec,
    Observed,
    PowerState,
    register,
)

from . import commands as lxc
from .config import CPU_PERIOD_US, CgroupVersion, ContainerConfig, InvalidConfig, render
from .host import read_cgroup_layout, unmount_under, unsupported_reason
from .layout import NAME_PREFIX, InstancePaths, Layout
from .rootfs import ensure_rootfs

DESIRED_RUNNING = "running"
DESIRED_STOPPED = "stopped"

_STATE_MAP: dict[str, tuple[PowerState, str]] = {
    lxc.RUNNING: (PowerState.running, ""),
    lxc.THAWED: (PowerState.running, ""),
    lxc.STARTING: (PowerState.running, "starting"),
    lxc.STOPPING: (PowerState.running, "stopping"),
    lxc.FROZEN: (PowerState.paused, ""),
    lxc.FREEZING: (PowerState.paused, "freezing"),
    lxc.ABORTING: (PowerState.crashed, "LXC is aborting the container"),
}


def _write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


@register
class LxcHypervisor(Hypervisor):
    name = "lxc"
    makes_own_nics = True  # LXC creates each NIC's veth pair at start (config.nic_lines)

    def __init__(self, state_dir: Path, **options: Any) -> None:
        super().__init__(state_dir, **options)
        self.layout = Layout(state_dir)
        self.lxc = lxc.Lxc(self.layout.lxcpath)
        self.start_timeout = float(options.get("start_timeout", 30.0))
        self.reboot_timeout = float(options.get("reboot_timeout", 30.0))

    # --- host ----------------------------------------------------------------------------

    @classmethod
    def probe(cls) -> str | None:
        return unsupported_reason()

    def capabilities(self) -> Capabilities:
        cgroup = read_cgroup_layout()
        return Capabilities(
            kind="container",
            image_kinds=frozenset({ImageKind.rootfs, ImageKind.disk}),
            pause=True,
            console_log=True,
            details={
                "cgroup": f"cgroup {cgroup}" if isinstance(cgroup, CgroupVersion) else cgroup,
                "cpu_limit": f"CFS quota: vcpus x {CPU_PERIOD_US} us per {CPU_PERIOD_US} us",
                "network": "a veth per NIC on the network's bridge",
                "privileged": True,
            },
        )

    def list_instances(self) -> list[str]:
        root = self.layout.lxcpath
        if not root.is_dir():
            return []
        ids = []
        for entry in sorted(root.iterdir()):
            if not (entry.is_dir() and entry.name.startswith(NAME_PREFIX)):
                continue
            try:
                ids.append((entry / "instance-id").read_text().strip())
            except OSError:  # create died before writing it: the name is all we have
                ids.append(entry.name.removeprefix(NAME_PREFIX))
        return ids

    # --- observing -----------------------------------------------------------------------

    def _desired(self, paths: InstancePaths) -> str:
        try:
            return paths.desired.read_text().strip()
        except OSError:
            return DESIRED_STOPPED

    def _set_desired(self, paths: InstancePaths, desired: str) -> None:
        _write_atomic(paths.desired, desired + "\n")

    def _state(self, paths: InstancePaths) -> str:
        state = self.lxc.state(paths.name)
        if state is None:
            raise HypervisorError(f"lxc-info does not know {paths.name} in {paths.lxcpath}")
        return state

    def _existing(self, instance_id: str) -> InstancePaths:
        paths = self.layout.instance(instance_id)
        if not paths.config.is_file():
            raise HypervisorError(f"no lxc instance {instance_id} on this host", retryable=False)
        return paths

    def status(self, instance_id: str) -> Observed:
        paths = self.layout.instance(instance_id)
        if not paths.dir.is_dir():
            return Observed(PowerState.absent)
        if not paths.config.is_file():
            return Observed(PowerState.absent, detail="partial artefacts: create did not finish")
        state = self._state(paths)
        if state == lxc.STOPPED:
            if self._desired(paths) == DESIRED_RUNNING:
                return Observed(PowerState.crashed, detail="stopped without being asked")
            return Observed(PowerState.stopped)
        power, detail = _STATE_MAP.get(state, (PowerState.crashed, f"unknown LXC state {state}"))
        return Observed(power, detail=detail)

    def console_log(self, instance_id: str, *, tail_bytes: int = 65536) -> str:
        paths = self._existing(instance_id)
        chunks: list[bytes] = []
        wanted = tail_bytes
        for log in (paths.console_log, paths.console_log_rotated):
            if wanted <= 0:
                break
            try:
                with log.open("rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - wanted))
                    data = f.read()
            except FileNotFoundError:
                continue
            chunks.insert(0, data)
            wanted -= len(data)
        return b"".join(chunks).decode(errors="replace")

    # --- making --------------------------------------------------------------------------

    def _render(self, spec: InstanceSpec, paths: InstancePaths, rootfs: Path) -> str:
        cgroup = read_cgroup_layout()
        if not isinstance(cgroup, CgroupVersion):
            raise HypervisorError(f"cannot limit containers: {cgroup}", retryable=False)
        cfg = ContainerConfig(
            name=paths.name,
            hostname=spec.hostname,
            rootfs_lower=rootfs,
            rootfs_upper=paths.upper,
            console_log=paths.console_log,
            lxc_log=paths.lxc_log,
            ram_mb=spec.ram_mb,
            vcpus=spec.vcpus,
            cgroup=cgroup,
            config_drive=paths.config_drive if spec.config_drive is not None else None,
            nics=spec.nics,
        )
        try:
            return render(cfg)
        except InvalidConfig as exc:
            raise HypervisorError(f"instance {spec.id}: {exc}", retryable=False) from exc

    def _rootfs(self, spec: InstanceSpec) -> Path:
        return ensure_rootfs(
            self.layout.image_dir(spec.image_id),
            spec.image_path,
            spec.image_kind,
            spec.image_format,
        )

    def create(self, spec: InstanceSpec) -> None:
        paths = self.layout.instance(spec.id)
        if paths.config.is_file():
            return
        rootfs = self._rootfs(spec)  # shared cache: never undone
        text = self._render(spec, paths, rootfs)  # refuse bad input before touching anything
        self.layout.lxcpath.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.ExitStack() as undo:
            if not paths.dir.exists():
                paths.dir.mkdir(mode=0o700)
                undo.callback(shutil.rmtree, paths.dir, ignore_errors=True)
            _write_atomic(paths.id_file, spec.id + "\n")
            paths.upper.mkdir(mode=0o755, exist_ok=True)
            paths.upper.chmod(0o755)  # the container's / takes the upper dir's mode
            self._set_desired(paths, DESIRED_STOPPED)
            configdrive.sync_tree(paths.config_drive, spec.config_drive)
            _write_atomic(paths.config, text)  # last: a config means create finished
            undo.pop_all()

    # --- power ---------------------------------------------------------------------------

    def _power_on(self, paths: InstancePaths) -> None:
        with contextlib.ExitStack() as undo:
            self._set_desired(paths, DESIRED_RUNNING)
            undo.callback(self._set_desired, paths, DESIRED_STOPPED)
            try:
                self.lxc.start(paths.name, timeout=self.start_timeout + 30)
            except HypervisorError:
                if self.lxc.state(paths.name) != lxc.RUNNING:
                    raise
            undo.callback(self.lxc.kill, paths.name)
            self.lxc.wait(paths.name, lxc.RUNNING, timeout=self.start_timeout)
            undo.pop_all()

    def start(self, spec: InstanceSpec) -> None:
        self.create(spec)
        paths = self.layout.instance(spec.id)
        state = self._state(paths)
        if state != lxc.STOPPED:  # running, paused or on its way: nothing to do
            self._set_desired(paths, DESIRED_RUNNING)
            return
        # Re-rendered on every start so a changed spec or a new driver version applies.
        configdrive.sync_tree(paths.config_drive, spec.config_drive)
        _write_atomic(paths.config, self._render(spec, paths, self._rootfs(spec)))
        self._power_on(paths)

    def _ensure_stopped(self, paths: InstancePaths, timeout: float) -> None:
        state = self._state(paths)
        if state == lxc.STOPPED:
            return
        if state in (lxc.FROZEN, lxc.FREEZING):
            self.lxc.unfreeze(paths.name)  # a frozen init cannot handle the halt signal
        if timeout > 0:
            self.lxc.shutdown(paths.name, timeout)
        else:
            self.lxc.kill(paths.name)
        self.lxc.wait(paths.name, lxc.STOPPED, timeout=30)

    def stop(self, instance_id: str, *, timeout: float = 30.0) -> None:
        paths = self._existing(instance_id)
        self._set_desired(paths, DESIRED_STOPPED)
        self._ensure_stopped(paths, timeout)

    def reboot(self, instance_id: str, *, hard: bool = False) -> None:
        paths = self._existing(instance_id)
        state = self._state(paths)
        if state in (lxc.FROZEN, lxc.FREEZING):
            self.lxc.unfreeze(paths.name)
            state = lxc.RUNNING
        if state == lxc.STOPPED:
            if not hard:
                raise HypervisorError(
                    f"cannot soft-reboot {instance_id}: it is not running", retryable=False
                )
            self._power_on(paths)
            return
        self._set_desired(paths, DESIRED_RUNNING)
        if not hard and self.lxc.reboot(paths.name, self.reboot_timeout):
            return
        # Hard reboot, or a soft one the guest ignored or answered by powering off.
        if self._state(paths) != lxc.STOPPED:
            self.lxc.kill(paths.name)
            self.lxc.wait(paths.name, lxc.STOPPED, timeout=30)
        self._power_on(paths)

    def pause(self, instance_id: str) -> None:
        paths = self._existing(instance_id)
        state = self._state(paths)
        if state == lxc.FROZEN:
            return
        if state != lxc.RUNNING:
            raise HypervisorError(f"cannot pause {instance_id}: it is {state}", retryable=False)
        self.lxc.freeze(paths.name)

    def resume(self, instance_id: str) -> None:
        paths = self._existing(instance_id)
        state = self._state(paths)
        if state == lxc.RUNNING:
            return
        if state not in (lxc.FROZEN, lxc.FREEZING):
            raise HypervisorError(f"cannot resume {instance_id}: it is {state}", retryable=False)
        self.lxc.unfreeze(paths.name)

    # --- removing ------------------------------------------------------------------------

    def destroy(self, instance_id: str) -> None:
        paths = self.layout.instance(instance_id)
        if not paths.dir.exists():
            return
        if paths.config.is_file():
            self._set_desired(paths, DESIRED_STOPPED)
            self._ensure_stopped(paths, timeout=0)
        # LXC mounts the rootfs in the container's namespace, but an operator or a crashed
        # tool may have left a mount here; deleting through a mount would delete its files.
        still_mounted = unmount_under(paths.dir)
        if still_mounted:
            raise HypervisorError(
                f"cannot remove {paths.dir}: still mounted: {', '.join(still_mounted)}"
            )
        shutil.rmtree(paths.dir)


__all__ = ["LxcHypervisor"]
