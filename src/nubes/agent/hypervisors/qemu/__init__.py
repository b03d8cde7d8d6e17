"""The QEMU driver: one daemonized QEMU process per instance, driven through QMP; KVM when it
really works (:mod:`.kvm`), TCG otherwise. It follows the semantics written down in
:mod:`nubes.agent.hypervisors.fake`.

Each instance lives in ``<state_dir>/instances/<id>/`` (:class:`.cmdline.InstancePaths`): a
qcow2 overlay on the cached base image, ``instance.json`` (written last by ``create``: the
instance is complete), the QMP socket, the serial console log (appended across boots), QEMU's
own log, its pidfile, its VNC display number and its config drive ISO
(:mod:`nubes.agent.configdrive`, rebuilt on start when its content changed). ``destroy``
removes the directory whole.

How the power state is read (``status``):

- QEMU alive (pidfile PID whose ``/proc/<pid>/cmdline`` names this instance): its QMP
  ``query-status`` decides: running; paused (also ``prelaunch``, ``io-error``...); stopped
  when the guest has powered off but QEMU lingers (only after an interrupted soft reboot);
  crashed for ``internal-error`` and ``guest-panicked``.
- QEMU gone: QEMU removes its pidfile when it exits cleanly (the guest powered off, or a
  ``quit``), not when it is killed. So: stopped when nubes asked for it (the ``stopped-by-nubes``
  marker, written before every stop or kill nubes makes), crashed when the pidfile is left
  behind (SIGKILL, a QEMU crash) or QEMU's log says a signal ended it, stopped otherwise (the
  guest powered itself off, or it never ran).

Soft reboot: QEMU is told to pause instead of exiting when the guest powers off
(``set-action shutdown=pause``), the guest gets an ACPI power-button press, and once it is
off it is reset and continued in the same process (VNC and QMP endpoints survive). A guest
that ignores the request for ``soft_reboot_timeout`` seconds is reset hard instead. Hard
reboot is ``system_reset``. Graceful stop is ``system_powerdown``, then after ``timeout`` a QMP
``quit``, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nubes.agent import configdrive
from nubes.agent.hypervisors.base import (
    Capabilities,
    Hypervisor,
    HypervisorError,
    ImageKind,
    InstanceSpec,
    Nic,
    Observed,
    PowerState,
    register,
)
from nubes.agent.hypervisors.qemu import process, vnc
from nubes.agent.hypervisors.qemu.cmdline import (
    VNC_HOST,
    Accel,
    InstancePaths,
    Machine,
    build_argv,
    valid_instance_id,
    vnc_port,
)
from nubes.agent.hypervisors.qemu.disks import GIB, create_overlay
from nubes.agent.hypervisors.qemu.kvm import probe_kvm
from nubes.agent.hypervisors.qemu.qmp import QMPClient, QMPError
from nubes.subp import SubpError, subp, which

log = logging.getLogger("nubes.agent.qemu")

#: QMP ``query-status`` run states, as power states.
RUNSTATES: Mapping[str, PowerState] = {
    "running": PowerState.running,
    "shutdown": PowerState.stopped,
    "internal-error": PowerState.crashed,
    "guest-panicked": PowerState.crashed,
}  # every other run state (paused, prelaunch, io-error, suspended, migrating...) is paused
KILLED = re.compile(r"terminating on signal \d+.*")
SERIAL_LOG_LIMIT = 2 * 1024 * 1024  # trimmed at start to its last SERIAL_LOG_KEEP bytes
SERIAL_LOG_KEEP = 512 * 1024
QUIT_TIMEOUT = 5.0
KILL_TIMEOUT = 10.0


def spec_to_json(spec: InstanceSpec) -> dict[str, Any]:
    data = asdict(spec)
    del data["config_drive"]  # bytes; kept as the ISO itself (paths.config_drive)
    data.update(
        image_path=str(spec.image_path),
        image_kind=str(spec.image_kind),
        public_keys=list(spec.public_keys),
    )
    return data


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(partial, path)


def saved_nics(paths: InstancePaths) -> tuple[Nic, ...]:
    """The NICs of the spec last written (``start`` writes it before every launch)."""
    try:
        spec = json.loads(paths.spec.read_text())["spec"]
    except (OSError, ValueError, KeyError):
        return ()
    return tuple(Nic(**nic) for nic in spec.get("nics") or ())


def _trim_log(path: Path) -> None:
    """Keep a console log bounded: cut it to its tail before QEMU appends to it again."""
    try:
        if path.stat().st_size <= SERIAL_LOG_LIMIT:
            return
        with path.open("rb") as log_file:
            log_file.seek(-SERIAL_LOG_KEEP, os.SEEK_END)
            tail = log_file.read()
    except FileNotFoundError:
        return
    path.write_bytes(tail)


def host_capacity(state_dir: Path) -> dict[str, int]:
    ram_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                ram_kib = int(line.split()[1])
    existing = state_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return {
        "vcpus": os.cpu_count() or 1,
        "ram_mb": ram_kib // 1024,
        "disk_gb": shutil.disk_usage(existing).total // GIB,
    }


@register
class QemuHypervisor(Hypervisor):
    """QEMU/KVM (or TCG) virtual machines. Options: ``qemu_binary``, ``qemu_img``, ``accel``
    (``auto``: KVM when the probe says it really works), ``vnc`` (a loopback VNC display per
    instance, from ``vnc_displays`` = [first, stop)), ``qmp_timeout`` and
    ``soft_reboot_timeout`` (seconds)."""

    name = "qemu"

    def __init__(
        self,
        state_dir: Path,
        *,
        qemu_binary: str = "qemu-system-x86_64",
        qemu_img: str = "qemu-img",
        accel: str = "auto",
        vnc: bool = True,
        vnc_displays: tuple[int, int] = (0, 1000),
        qmp_timeout: float = 10.0,
        soft_reboot_timeout: float = 60.0,
        **options: Any,
    ) -> None:
        super().__init__(state_dir, **options)
        if accel not in ("auto", *Accel):
            raise HypervisorError(f"accel must be auto, kvm or tcg, not {accel!r}", retryable=False)
        self.qemu_binary = qemu_binary
        self.qemu_img = qemu_img
        self.accel = accel
        self.vnc = vnc
        self.vnc_displays = vnc_displays
        self.qmp_timeout = qmp_timeout
        self.soft_reboot_timeout = soft_reboot_timeout
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def probe(cls) -> str | None:
        for binary, package in (
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("qemu-img", "qemu-utils"),
        ):
            if which(binary) is None:
                return f"{binary} not found (Debian package {package})"
        return None

    def accelerator(self) -> tuple[Accel, dict[str, Any]]:
        """Which accelerator guests get, and why (the KVM probe runs once per process)."""
        if self.accel != "auto":
            return Accel(self.accel), {"accel": self.accel, "why": "configured"}
        kvm = probe_kvm()
        details: dict[str, Any] = {"why": kvm.why}
        if kvm.ns_per_iteration is not None:
            details["kvm_ns_per_iteration"] = kvm.ns_per_iteration
        accel = Accel.kvm if kvm.usable else Accel.tcg
        return accel, {"accel": str(accel), **details}

    def capabilities(self) -> Capabilities:
        accel, details = self.accelerator()
        return Capabilities(
            kind=self.name,
            image_kinds=frozenset({ImageKind.disk}),
            accelerated=accel is Accel.kvm,
            pause=True,
            vnc=self.vnc,
            console_log=True,
            details={**details, "capacity": host_capacity(self.state_dir)},
        )

    # -- reading ------------------------------------------------------------------------------

    def list_instances(self) -> list[str]:
        """Every instance directory, complete or not (leftovers are for ``destroy``)."""
        try:
            entries = list((self.state_dir / "instances").iterdir())
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if e.is_dir() and valid_instance_id(e.name))

    def status(self, instance_id: str) -> Observed:
        paths = self._paths(instance_id)
        if not paths.root.is_dir():
            return Observed(PowerState.absent)
        if not paths.spec.exists():
            return Observed(PowerState.absent, "leftovers of an unfinished create")
        pid = process.instance_pid(paths.pidfile, instance_id)
        if pid is None:
            return self._dead(paths)
        try:
            runstate = str(self._qmp(paths, "query-status")["status"])
        except HypervisorError as exc:
            return Observed(PowerState.running, f"pid {pid}; {exc}", self._console(paths))
        power = RUNSTATES.get(runstate, PowerState.paused)
        if power is PowerState.stopped:
            return Observed(power, f"the guest is off; QEMU (pid {pid}) lingers")
        return Observed(power, f"pid {pid}: {runstate}", self._console(paths))

    def console_log(self, instance_id: str, *, tail_bytes: int = 65536) -> str:
        paths = self._paths(instance_id)
        if not paths.root.is_dir():
            raise HypervisorError(f"no instance {instance_id} on this host", retryable=False)
        if tail_bytes <= 0:
            return ""
        try:
            with paths.serial_log.open("rb") as serial:
                serial.seek(max(serial.seek(0, os.SEEK_END) - tail_bytes, 0))
                return serial.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    # -- changing -----------------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> None:
        paths = self._paths(spec.id)
        if spec.image_kind is not ImageKind.disk:
            raise HypervisorError(
                f"qemu boots disk images, not a {spec.image_kind}", retryable=False
            )
        with self._lock(spec.id):
            if paths.spec.exists():
                return
            if paths.root.exists():  # an unfinished create: start over
                self._kill_everything(paths, spec.id)
                shutil.rmtree(paths.root)
            with ExitStack() as undo:
                paths.root.parent.mkdir(parents=True, exist_ok=True)
                paths.root.mkdir(mode=0o700)
                undo.callback(shutil.rmtree, paths.root, ignore_errors=True)
                create_overlay(
                    paths.disk, spec.image_path, spec.image_format, spec.disk_gb,
                    qemu_img=self.qemu_img,
                )  # fmt: skip
                configdrive.sync_iso(paths.config_drive, spec.config_drive)
                _write_json(paths.spec, {"spec": spec_to_json(spec)})
                undo.pop_all()

    def start(self, spec: InstanceSpec) -> None:
        paths = self._paths(spec.id)
        with self._lock(spec.id):
            self._require(paths, spec.id)
            pid = process.instance_pid(paths.pidfile, spec.id)
            if pid is not None:
                power = self._power(paths)
                if power is PowerState.running:
                    return
                if power is PowerState.paused:
                    self._qmp(paths, "cont")
                    return
                self._hard_stop(paths, spec.id, pid)  # powered off but lingering, or crashed
            _write_json(paths.spec, {"spec": spec_to_json(spec)})  # a resize takes effect now
            configdrive.sync_iso(paths.config_drive, spec.config_drive)  # so does new metadata
            self._launch(paths, spec.id, spec.vcpus, spec.ram_mb)

    def stop(self, instance_id: str, *, timeout: float = 30.0) -> None:
        paths = self._paths(instance_id)
        with self._lock(instance_id):
            self._require(paths, instance_id)
            paths.stop_marker.touch()
            pid = process.instance_pid(paths.pidfile, instance_id)
            if pid is None:  # stopped already, or crashed: acknowledge it
                paths.pidfile.unlink(missing_ok=True)
                return
            if timeout > 0 and self._power(paths) is PowerState.running:
                try:
                    self._qmp(paths, "system_powerdown")
                except HypervisorError as exc:
                    log.warning("instance %s: no graceful stop: %s", instance_id, exc)
                else:
                    if process.wait_gone(pid, instance_id, timeout):
                        paths.qmp_socket.unlink(missing_ok=True)
                        return
                    log.info(
                        "instance %s ignored ACPI for %s s: stopping hard", instance_id, timeout
                    )
            self._hard_stop(paths, instance_id, pid)

    def reboot(self, instance_id: str, *, hard: bool = False) -> None:
        paths = self._paths(instance_id)
        with self._lock(instance_id):
            self._require(paths, instance_id)
            pid = process.instance_pid(paths.pidfile, instance_id)
            power = self._power(paths) if pid is not None else self._dead(paths).power
            if not hard:
                if pid is None or power is not PowerState.running:
                    raise HypervisorError(
                        f"instance {instance_id} is {power}: only a running guest can reboot "
                        "softly",
                        retryable=False,
                    )
                self._soft_reboot(paths, instance_id, pid)
            elif pid is not None and power in (PowerState.running, PowerState.paused):
                self._qmp(paths, "system_reset")
                if power is PowerState.paused:
                    self._qmp(paths, "cont")
            else:
                if pid is not None:
                    self._hard_stop(paths, instance_id, pid)
                spec = json.loads(paths.spec.read_text())["spec"]
                self._launch(paths, instance_id, int(spec["vcpus"]), int(spec["ram_mb"]))

    def pause(self, instance_id: str) -> None:
        self._flip(instance_id, PowerState.running, PowerState.paused, "stop")

    def resume(self, instance_id: str) -> None:
        self._flip(instance_id, PowerState.paused, PowerState.running, "cont")

    def destroy(self, instance_id: str) -> None:
        paths = self._paths(instance_id)
        with self._lock(instance_id):
            if not paths.root.exists():
                return
            paths.stop_marker.touch()
            self._kill_everything(paths, instance_id)
            try:
                shutil.rmtree(paths.root)
            except OSError as exc:
                raise HypervisorError(f"cannot remove {paths.root}: {exc}") from exc

    # -- internals ----------------------------------------------------------------------------

    def _paths(self, instance_id: str) -> InstancePaths:
        if not valid_instance_id(instance_id):
            raise HypervisorError(f"invalid instance id {instance_id!r}", retryable=False)
        return InstancePaths.of(self.state_dir, instance_id)

    def _lock(self, instance_id: str) -> threading.RLock:
        """One operation at a time per instance (``status`` takes no lock)."""
        with self._locks_guard:
            return self._locks.setdefault(instance_id, threading.RLock())

    def _require(self, paths: InstancePaths, instance_id: str) -> None:
        if not paths.spec.exists():
            raise HypervisorError(f"no instance {instance_id} on this host", retryable=False)

    def _qmp(self, paths: InstancePaths, command: str, **arguments: Any) -> Any:
        """One command in its own short session (QEMU serves one QMP client at a time)."""
        try:
            with QMPClient.connect(paths.qmp_socket, timeout=self.qmp_timeout) as qmp:
                return qmp.execute(command, arguments)
        except QMPError as exc:
            raise HypervisorError(f"QMP {command} on {paths.root.name}: {exc}") from exc

    def _power(self, paths: InstancePaths) -> PowerState:
        """The power state of a live QEMU, from its run state (running when QMP is silent)."""
        try:
            runstate = str(self._qmp(paths, "query-status")["status"])
        except HypervisorError:
            return PowerState.running
        return RUNSTATES.get(runstate, PowerState.paused)

    def _dead(self, paths: InstancePaths) -> Observed:
        """The state of an instance whose QEMU is not alive (module docs)."""
        if paths.stop_marker.exists():
            return Observed(PowerState.stopped)
        pid = process.read_pidfile(paths.pidfile)
        if pid is not None:
            return Observed(
                PowerState.crashed,
                f"QEMU (pid {pid}) died without being asked; see {paths.qemu_log}",
            )
        try:
            killed = KILLED.search(paths.qemu_log.read_text(errors="replace"))
        except FileNotFoundError:
            killed = None
        if killed:
            return Observed(PowerState.crashed, f"QEMU was killed: {killed.group(0)}")
        return Observed(PowerState.stopped)

    def _console(self, paths: InstancePaths) -> dict[str, Any]:
        display = vnc.read_display(paths.vnc_display) if self.vnc else None
        if display is None:
            return {}
        return {"vnc_host": VNC_HOST, "vnc_port": vnc_port(display)}

    def _flip(self, instance_id: str, source: PowerState, target: PowerState, command: str) -> None:
        paths = self._paths(instance_id)
        with self._lock(instance_id):
            self._require(paths, instance_id)
            pid = process.instance_pid(paths.pidfile, instance_id)
            power = self._power(paths) if pid is not None else self._dead(paths).power
            if power is target:
                return
            if power is not source:
                raise HypervisorError(
                    f"instance {instance_id} is {power}, not {source}", retryable=False
                )
            self._qmp(paths, command)

    def _launch(self, paths: InstancePaths, instance_id: str, vcpus: int, ram_mb: int) -> None:
        """Start QEMU paused, then let the guest run. On any failure nothing is left running
        and the instance reads as stopped."""
        accel, _ = self.accelerator()
        with ExitStack() as undo:
            undo.callback(self._kill_everything, paths, instance_id)
            for stale in (paths.pidfile, paths.qmp_socket, paths.stop_marker):
                stale.unlink(missing_ok=True)
            _trim_log(paths.serial_log)
            with vnc.allocation_lock(self.state_dir):
                display = (
                    vnc.pick_display(self.state_dir, instance_id, self.vnc_displays)
                    if self.vnc
                    else None
                )
                drive = paths.config_drive if paths.config_drive.exists() else None
                machine = Machine(
                    instance_id, vcpus, ram_mb, accel, display, drive, saved_nics(paths)
                )
                argv = build_argv(machine, paths, binary=self.qemu_binary)
                try:
                    subp(argv, cwd=paths.root, timeout=60)
                except SubpError as exc:
                    raise HypervisorError(f"QEMU did not start: {exc}") from exc
            self._qmp(paths, "cont")
            undo.pop_all()
        pid = process.read_pidfile(paths.pidfile)
        log.info("instance %s: started (%s, pid %s)", instance_id, accel, pid)

    def _soft_reboot(self, paths: InstancePaths, instance_id: str, pid: int) -> None:
        self._qmp(paths, "set-action", shutdown="pause")
        try:
            self._qmp(paths, "system_powerdown")
            deadline = time.monotonic() + self.soft_reboot_timeout
            while self._power(paths) is not PowerState.stopped:
                if process.instance_pid(paths.pidfile, instance_id) is None:
                    raise HypervisorError(f"instance {instance_id}: QEMU exited during a reboot")
                if time.monotonic() >= deadline:
                    log.warning(
                        "instance %s ignored the reboot request for %s s: resetting it",
                        instance_id, self.soft_reboot_timeout,
                    )  # fmt: skip
                    break
                time.sleep(0.1)
            self._qmp(paths, "system_reset")
            if self._power(paths) is not PowerState.running:
                self._qmp(paths, "cont")
        finally:
            if process.instance_pid(paths.pidfile, instance_id) == pid:
                try:
                    self._qmp(paths, "set-action", shutdown="poweroff")
                except HypervisorError as exc:  # status() then reads a later power-off right
                    log.warning("instance %s: %s", instance_id, exc)

    def _hard_stop(self, paths: InstancePaths, instance_id: str, pid: int) -> None:
        """QMP ``quit`` (QEMU flushes its image caches), then SIGKILL."""
        paths.stop_marker.touch()
        try:
            self._qmp(paths, "quit")
        except HypervisorError as exc:
            log.debug("instance %s: %s", instance_id, exc)  # QEMU may close before answering
        if not process.wait_gone(pid, instance_id, QUIT_TIMEOUT):
            self._kill_everything(paths, instance_id)
        paths.pidfile.unlink(missing_ok=True)
        paths.qmp_socket.unlink(missing_ok=True)

    def _kill_everything(self, paths: InstancePaths, instance_id: str) -> None:
        """SIGKILL every process of this instance (pidfile or not) and wait for them to go."""
        if paths.root.is_dir():
            paths.stop_marker.touch()
        pids = set(process.find_instance_processes(instance_id))
        pid = process.instance_pid(paths.pidfile, instance_id)
        if pid is not None:
            pids.add(pid)
        for pid in pids:
            process.kill(pid, instance_id)
        for pid in pids:
            if not process.wait_gone(pid, instance_id, KILL_TIMEOUT):
                raise HypervisorError(f"instance {instance_id}: QEMU (pid {pid}) will not die")
        paths.pidfile.unlink(missing_ok=True)
