"""The fake hypervisor: no guests, only their bookkeeping. Its docstrings define the semantics
every real driver follows; the functional and scale tests run on it, one per simulated host.

Semantics (``status`` after each operation, from each state; "error" is a
:class:`HypervisorError` with ``retryable=False``)::

    operation     absent        stopped        running        paused         crashed
    create        → stopped     no-op          no-op          no-op          no-op
    start         error         → running      no-op          → running (a)  → running
    stop          error         no-op          → stopped (b)  → stopped (c)  → stopped (d)
    reboot hard   error         → running      → running      → running      → running
    reboot soft   error         error          → running (e)  error          error
    pause         error         error          → paused       no-op          error
    resume        error         error          no-op          → running      error
    destroy       no-op         → absent       → absent       → absent       → absent

    (a) start means "make it run": a paused guest is resumed, not rebooted.
    (b) graceful: the guest is asked to power off (ACPI) and given ``timeout`` seconds; a guest
        that ignores the request is then stopped hard. ``stop`` returns once it is stopped and
        never fails because the guest ignored it.
    (c) a paused guest cannot hear an ACPI request: it is stopped hard at once.
    (d) stopping a crashed instance acknowledges the crash; nothing is left running.
    (e) the guest is asked to shut down (ACPI) and is powered on again once it is off; a guest
        that ignores the request for the driver's ``soft_reboot_timeout`` is reset hard
        instead, so a soft reboot always ends with the guest booting again.

``crashed`` means the guest died without being asked (killed, emulator crash, guest panic). It
stays ``crashed`` until ``start``, ``stop``, a hard ``reboot`` or ``destroy``. ``status`` never
fails for an absent instance: it reports ``absent``. ``list_instances`` lists every id with
artefacts, whatever its state. ``console_log`` of an absent instance is an error, of one never
started an empty string; the log survives restarts. Instances outlive the driver object: a new
driver on the same ``state_dir`` (an agent restart) finds them in the state they were in (the
fake persists its bookkeeping to ``state_dir/fake-instances/<id>.json``). Ids are file names:
not empty, no ``/``, no leading dot.

Failure injection, for the whole host (constructor) or one instance (:meth:`inject`):

- ``fail_at``: operations that raise a retryable :class:`HypervisorError` before changing
  anything;
- ``hang_at``: operations that block until :meth:`release_hangs` is called (then go on) or
  ``hang_timeout`` seconds pass (then raise a retryable error), like a wedged host;
- ``crash_after``: seconds after each start when a running guest goes ``crashed``, computed
  from timestamps when the state is next read (no thread or timer per instance);
- ``ignore_shutdown``: the guest ignores ACPI requests (``stop`` waits out its timeout, soft
  ``reboot`` falls back to a reset).

``delays`` (seconds per operation name) makes operations take time, outside the lock, so
concurrent callers overlap as they would on a real host. The fake must stay cheap: a process
holds a thousand of them, one per simulated host.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

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

OPERATIONS = frozenset(
    {
        "create",
        "start",
        "stop",
        "reboot",
        "pause",
        "resume",
        "destroy",
        "status",
        "list_instances",
        "console_log",
    }
)
DEFAULT_CAPACITY: Mapping[str, int] = {"vcpus": 64, "ram_mb": 262144, "disk_gb": 4096}
STATE_DIR = "fake-instances"  # one JSON file per instance: a write costs O(1)
CONSOLE_LIMIT = 65536  # bytes of console text kept per instance


def _operations(names: Iterable[str]) -> frozenset[str]:
    result = frozenset(names)
    unknown = result - OPERATIONS
    if unknown:
        raise ValueError(f"unknown fake hypervisor operations: {sorted(unknown)}")
    return result


@dataclass(frozen=True)
class Faults:
    fail_at: frozenset[str] = frozenset()
    hang_at: frozenset[str] = frozenset()
    crash_after: float | None = None
    ignore_shutdown: bool = False

    def __or__(self, other: Faults) -> Faults:
        """Host-wide faults combined with one instance's (the instance's numbers win)."""
        return Faults(
            self.fail_at | other.fail_at,
            self.hang_at | other.hang_at,
            other.crash_after if other.crash_after is not None else self.crash_after,
            self.ignore_shutdown or other.ignore_shutdown,
        )


@dataclass
class _Instance:
    spec: dict[str, Any]
    power: PowerState = PowerState.stopped
    detail: str = ""
    started_at: float | None = None
    crash_at: float | None = None
    boots: int = 0
    console: str = ""

    def log(self, line: str) -> None:
        self.console = (self.console + line + "\n")[-CONSOLE_LIMIT:]


def spec_to_json(spec: InstanceSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["image_path"] = str(spec.image_path)
    data["image_kind"] = str(spec.image_kind)
    data["public_keys"] = list(spec.public_keys)
    data["nics"] = [asdict(nic) for nic in spec.nics]
    if spec.config_drive is not None:  # kept as text, so tests can read what a guest would
        data["config_drive"] = {
            path: content.decode(errors="replace") for path, content in spec.config_drive.items()
        }
    return data


@register
class FakeHypervisor(Hypervisor):
    """In-memory guests, persisted to one JSON file, with failure injection (module docs)."""

    name = "fake"
    #: NICs are only recorded (:meth:`nics`): nothing is made on the host, no tap plugged
    makes_own_nics = True

    def __init__(
        self,
        state_dir: Path,
        *,
        capacity: Mapping[str, int] | None = None,
        delays: Mapping[str, float] | None = None,
        fail_at: Iterable[str] = (),
        hang_at: Iterable[str] = (),
        crash_after: float | None = None,
        ignore_shutdown: bool = False,
        hang_timeout: float = 30.0,
        soft_reboot_timeout: float = 0.0,
        persist: bool = True,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        super().__init__(state_dir, **options)
        self.capacity = {**DEFAULT_CAPACITY, **(capacity or {})}
        self.delays = dict(delays or {})
        _operations(self.delays)
        self.faults = Faults(
            _operations(fail_at), _operations(hang_at), crash_after, ignore_shutdown
        )
        self.hang_timeout = hang_timeout
        self.soft_reboot_timeout = soft_reboot_timeout
        self.persist = persist
        self.clock = clock
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._instance_faults: dict[str, Faults] = {}
        self._instances: dict[str, _Instance] = self._load()

    @classmethod
    def probe(cls) -> str | None:
        """The fake runs anywhere."""
        return None

    def capabilities(self) -> Capabilities:
        return Capabilities(
            kind=self.name,
            image_kinds=frozenset(ImageKind),
            pause=True,
            details={"capacity": dict(self.capacity)},
        )

    # -- failure injection --------------------------------------------------------------------

    def inject(
        self,
        instance_id: str,
        *,
        fail_at: Iterable[str] | None = None,
        hang_at: Iterable[str] | None = None,
        crash_after: float | None = None,
        ignore_shutdown: bool | None = None,
    ) -> None:
        """Set faults for one instance (it need not exist yet); arguments left out keep their
        value. ``crash_after`` given for a running instance counts from its last start."""
        with self._lock:
            old = self._instance_faults.get(instance_id, Faults())
            new = Faults(
                old.fail_at if fail_at is None else _operations(fail_at),
                old.hang_at if hang_at is None else _operations(hang_at),
                old.crash_after if crash_after is None else crash_after,
                old.ignore_shutdown if ignore_shutdown is None else ignore_shutdown,
            )
            self._instance_faults[instance_id] = new
            inst = self._instances.get(instance_id)
            running = inst is not None and inst.power is PowerState.running
            if crash_after is not None and running and inst and inst.started_at is not None:
                inst.crash_at = inst.started_at + crash_after
                self._save(instance_id)

    def clear_faults(self, instance_id: str | None = None) -> None:
        """Forget one instance's faults, or every fault (host-wide ones too) when no id."""
        with self._lock:
            if instance_id is None:
                self._instance_faults.clear()
                self.faults = Faults()
            else:
                self._instance_faults.pop(instance_id, None)

    def release_hangs(self) -> None:
        """Let every operation blocked by ``hang_at`` go on (and every later one pass)."""
        self._released.set()

    # -- the contract -------------------------------------------------------------------------

    def list_instances(self) -> list[str]:
        """Every instance this host has, whatever its state, sorted."""
        self._enter("list_instances", None)
        with self._lock:
            return sorted(self._instances)

    def status(self, instance_id: str) -> Observed:
        """``absent`` for an unknown id (never an error); ``crashed`` once ``crash_after`` has
        passed since the last start."""
        self._enter("status", instance_id)
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return Observed(PowerState.absent)
            self._observe(instance_id, inst)
            return Observed(inst.power, inst.detail)

    def create(self, spec: InstanceSpec) -> None:
        """absent → stopped. Creating an existing instance changes nothing (not even its
        spec)."""
        self._enter("create", spec.id)
        if not spec.id or "/" in spec.id or spec.id.startswith("."):
            raise HypervisorError(f"invalid instance id {spec.id!r}", retryable=False)
        with self._lock:
            if spec.id in self._instances:
                return
            self._instances[spec.id] = _Instance(spec=spec_to_json(spec))
            self._save(spec.id)

    def start(self, spec: InstanceSpec) -> None:
        """stopped/crashed → running (a boot); paused → running (resumed); running: no-op.
        The spec given is kept for later boots (a resize takes effect at the next start)."""
        self._enter("start", spec.id)
        with self._lock:
            inst = self._existing(spec.id)
            self._observe(spec.id, inst)
            if inst.power is PowerState.running:
                return
            inst.spec = spec_to_json(spec)
            if inst.power is PowerState.paused:
                inst.power, inst.detail = PowerState.running, ""
            else:
                self._boot(spec.id, inst)
            self._save(spec.id)

    def stop(self, instance_id: str, *, timeout: float = 30.0) -> None:
        """running → stopped: gracefully, or hard after ``timeout`` seconds when the guest
        ignores the request (``timeout=0``: hard at once). paused → stopped hard. crashed →
        stopped. stopped: no-op. Returns once the instance is stopped."""
        self._enter("stop", instance_id)
        if timeout < 0:
            raise HypervisorError(f"stop timeout must be >= 0, not {timeout}", retryable=False)
        with self._lock:
            inst = self._existing(instance_id)
            self._observe(instance_id, inst)
            power = inst.power
            ignores = self._faults(instance_id).ignore_shutdown
        if power is PowerState.running and ignores:
            time.sleep(timeout)  # waiting out the guest is what a real driver does too
        with self._lock:
            inst = self._existing(instance_id)
            if inst.power is PowerState.stopped:
                return
            if inst.power is PowerState.running and not ignores:
                detail = "powered off by the guest"
            elif inst.power is PowerState.running:
                detail = f"stopped hard: the guest ignored the request for {timeout} s"
            elif inst.power is PowerState.crashed:
                detail = "stopped after a crash"
            else:
                detail = f"stopped hard from {inst.power}"
            inst.power, inst.detail = PowerState.stopped, detail
            inst.started_at = inst.crash_at = None
            inst.log(f"fake: {inst.spec['hostname']}: {detail}")
            self._save(instance_id)

    def reboot(self, instance_id: str, *, hard: bool = False) -> None:
        """Hard: reset whatever the state (a stopped or crashed instance boots). Soft: only a
        running guest; it reboots itself, or is reset when it ignores the request."""
        self._enter("reboot", instance_id)
        with self._lock:
            inst = self._existing(instance_id)
            self._observe(instance_id, inst)
            power = inst.power
            ignores = self._faults(instance_id).ignore_shutdown
            if not hard and power is not PowerState.running:
                raise HypervisorError(
                    f"instance {instance_id} is {power}: only a running guest can reboot softly",
                    retryable=False,
                )
        if not hard and ignores:
            time.sleep(self.soft_reboot_timeout)
        with self._lock:
            inst = self._existing(instance_id)
            self._boot(instance_id, inst)
            if not hard and ignores:
                inst.detail = "reset: the guest ignored the soft reboot request"
            self._save(instance_id)

    def pause(self, instance_id: str) -> None:
        """running → paused; paused: no-op; otherwise an error."""
        self._enter("pause", instance_id)
        self._flip(instance_id, PowerState.running, PowerState.paused)

    def resume(self, instance_id: str) -> None:
        """paused → running; running: no-op; otherwise an error."""
        self._enter("resume", instance_id)
        self._flip(instance_id, PowerState.paused, PowerState.running)

    def destroy(self, instance_id: str) -> None:
        """Anything → absent; destroying an absent instance is a no-op."""
        self._enter("destroy", instance_id)
        with self._lock:
            if self._instances.pop(instance_id, None) is not None:
                self._save(instance_id)

    def nics(self, instance_id: str) -> tuple[Nic, ...]:
        """The NICs of the spec last given to ``create`` or ``start`` (not a driver method:
        for tests that check what reached the driver)."""
        with self._lock:
            recorded = self._existing(instance_id).spec.get("nics") or ()
        return tuple(Nic(**nic) for nic in recorded)

    def console_log(self, instance_id: str, *, tail_bytes: int = 65536) -> str:
        """The last ``tail_bytes`` of the console: a line per boot and per power-off."""
        self._enter("console_log", instance_id)
        with self._lock:
            text = self._existing(instance_id).console
        data = text.encode()
        return data[-tail_bytes:].decode(errors="ignore") if tail_bytes > 0 else ""

    # -- internals ----------------------------------------------------------------------------

    def _faults(self, instance_id: str | None) -> Faults:
        if instance_id is None:
            return self.faults
        return self.faults | self._instance_faults.get(instance_id, Faults())

    def _enter(self, operation: str, instance_id: str | None) -> None:
        """Apply injected hangs, failures and delays, outside the lock."""
        with self._lock:
            faults = self._faults(instance_id)
        if operation in faults.hang_at and not self._released.wait(self.hang_timeout):
            raise HypervisorError(f"fake {operation} hung for {self.hang_timeout} s")
        if operation in faults.fail_at:
            raise HypervisorError(f"fake {operation} failed (injected)")
        delay = self.delays.get(operation, 0.0)
        if delay > 0:
            time.sleep(delay)

    def _existing(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise HypervisorError(f"no instance {instance_id} on this host", retryable=False)
        return inst

    def _observe(self, instance_id: str, inst: _Instance) -> None:
        """Apply a due crash (lazily: the fake keeps no timer per instance)."""
        if (
            inst.power is PowerState.running
            and inst.crash_at is not None
            and self.clock() >= inst.crash_at
        ):
            inst.power = PowerState.crashed
            inst.detail = "the guest died without being asked (injected crash)"
            inst.crash_at = None
            inst.log(f"fake: {inst.spec['hostname']}: crashed")
            self._save(instance_id)

    def _boot(self, instance_id: str, inst: _Instance) -> None:
        now = self.clock()
        crash_after = self._faults(instance_id).crash_after
        inst.power, inst.detail = PowerState.running, ""
        inst.started_at = now
        inst.crash_at = now + crash_after if crash_after is not None else None
        inst.boots += 1
        inst.log(f"fake: {inst.spec['hostname']}: booted (boot {inst.boots})")

    def _flip(self, instance_id: str, source: PowerState, target: PowerState) -> None:
        with self._lock:
            inst = self._existing(instance_id)
            self._observe(instance_id, inst)
            if inst.power is target:
                return
            if inst.power is not source:
                raise HypervisorError(
                    f"instance {instance_id} is {inst.power}, not {source}", retryable=False
                )
            inst.power, inst.detail = target, ""
            self._save(instance_id)

    def _state_path(self, instance_id: str) -> Path:
        return self.state_dir / STATE_DIR / f"{instance_id}.json"

    def _load(self) -> dict[str, _Instance]:
        instances: dict[str, _Instance] = {}
        if not self.persist:
            return instances
        try:
            paths = sorted((self.state_dir / STATE_DIR).glob("*.json"))
        except OSError as exc:
            raise HypervisorError(f"unreadable {self.state_dir / STATE_DIR}: {exc}") from exc
        for path in paths:
            try:
                data = json.loads(path.read_text())
                inst = replace(_Instance(**data), power=PowerState(data["power"]))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise HypervisorError(f"unreadable {path}: {exc}") from exc
            instances[path.stem] = inst
        return instances

    def _save(self, instance_id: str) -> None:
        """Write one instance's bookkeeping atomically, or remove it (lock held)."""
        if not self.persist:
            return
        path = self._state_path(instance_id)
        inst = self._instances.get(instance_id)
        if inst is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps({**asdict(inst), "power": str(inst.power)}))
        os.replace(partial, path)
