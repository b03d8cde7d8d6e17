"""Level-triggered reconciliation: for each instance the controller wants on this host, read
what the driver sees, take the one step that brings them closer, report what is now true.
Anything the driver has that the controller does not want is an orphan and is destroyed.

Idempotent by construction: every step is safe to repeat (drivers guarantee it), so a
restarted agent (kill -9 at any moment) simply runs the next pass and converges.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nubes.agent.client import ControllerClient, ControllerError
from nubes.agent.configdrive import from_wire
from nubes.agent.hypervisors.base import (
    Hypervisor,
    HypervisorError,
    ImageKind,
    InstanceSpec,
    Nic,
    Observed,
    PowerState,
)
from nubes.agent.images import ImageCache
from nubes.agent.network import NetworkAgent, NetworkError
from nubes.domain.netdesired import HostNetworks, bridge_name, from_json, tap_name

log = logging.getLogger("nubes.agent")

#: A retryable driver error this many times in a row becomes the instance's error.
MAX_ATTEMPTS = 3
REPORT_EVERY = 30.0
CONSOLE_EVERY = 1.0
STOP_TIMEOUT = 30.0


class Reconciler:
    def __init__(
        self,
        driver: Hypervisor,
        client: ControllerClient,
        images: ImageCache,
        workers: int = 4,
        network: NetworkAgent | None = None,
    ) -> None:
        self.driver = driver
        self.client = client
        self.images = images
        #: converges the host's networks before instances; None: the agent does no networking
        self.network = network
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._done_tasks: dict[str, str] = {}
        self._failures: dict[str, int] = {}
        self._last_report: dict[str, tuple[Any, float]] = {}
        self._console_sent: dict[str, tuple[int, float]] = {}
        self.running = 0
        #: when a guest was last started or rebooted: the agent then looks more often for a
        #: while, so its console (boot marker) reaches the controller within a second or two
        self.last_start = 0.0

    # one pass -----------------------------------------------------------------------------

    def reconcile_all(
        self,
        desired: list[dict[str, Any]],
        *,
        wait: bool = False,
        networks: HostNetworks | None = None,
    ) -> None:
        """``networks`` (when the controller sends them) converge first, synchronously: a
        guest must find its bridge, and its port's filtering, before it starts."""
        if networks is not None and self.network is not None:
            try:
                self.network.converge(networks)
            except Exception:  # a network bug must not stop instances from reconciling
                log.exception("network: converge failed")
        wanted = {d["id"]: d for d in desired}
        jobs = []
        for instance_id in self.driver.list_instances():
            if instance_id not in wanted:
                jobs.append(self._submit(instance_id, self._remove_orphan, instance_id))
        for item in desired:
            jobs.append(self._submit(item["id"], self.reconcile_one, item))
        self.running = sum(
            1 for d in desired if d["desired_power"] == "running" and d["state"] == "running"
        )
        if wait:
            for job in jobs:
                if job is not None:
                    job.result()

    def _submit(self, instance_id: str, fn: Any, arg: Any) -> Any:
        with self._lock:
            if instance_id in self._busy:
                return None  # the previous pass is still on it; the next pass will look again
            self._busy.add(instance_id)

        def run() -> None:
            try:
                fn(arg)
            except Exception:
                log.exception("instance %s: reconcile failed", instance_id)
            finally:
                with self._lock:
                    self._busy.discard(instance_id)

        return self.pool.submit(run)

    def _remove_orphan(self, instance_id: str) -> None:
        log.info("instance %s: not wanted on this host; destroying it", instance_id)
        self.driver.destroy(instance_id)

    # one instance -------------------------------------------------------------------------

    def reconcile_one(self, item: dict[str, Any]) -> None:
        instance_id = item["id"]
        try:
            self._step(item)
            self._failures.pop(instance_id, None)
        except HypervisorError as exc:
            count = self._failures.get(instance_id, 0) + 1
            self._failures[instance_id] = count
            if not exc.retryable or count >= MAX_ATTEMPTS:
                self._report(
                    instance_id, {"power": self._power(instance_id), "error": str(exc)}, force=True
                )
                self._failures.pop(instance_id, None)
            else:
                log.warning("instance %s: %s (attempt %d, will retry)", instance_id, exc, count)
        except ControllerError as exc:
            log.warning("instance %s: controller: %s", instance_id, exc)

    def _power(self, instance_id: str) -> str:
        try:
            return self.driver.status(instance_id).power.value
        except HypervisorError:
            return PowerState.absent.value

    def _spec(self, item: dict[str, Any]) -> InstanceSpec:
        image = item["image"]
        path = self.images.path(image["id"], image["kind"], image["checksum"])
        return InstanceSpec(
            id=item["id"],
            name=item["name"],
            hostname=item["hostname"],
            vcpus=item["vcpus"],
            ram_mb=item["ram_mb"],
            disk_gb=item["disk_gb"],
            image_id=image["id"],
            image_path=path,
            image_kind=ImageKind(image["kind"]),
            image_format=image["format"],
            user_data=item.get("user_data"),
            metadata=dict(item.get("metadata") or {}),
            public_keys=tuple(item.get("public_keys") or ()),
            config_drive=from_wire(item.get("config_drive")),
            nics=tuple(_nic(n) for n in item.get("nics") or ()),
        )

    def _plug(self, spec: InstanceSpec) -> None:
        """Make the taps a QEMU guest opens (a driver that makes its own NICs needs none)."""
        if self.network is None or self.driver.makes_own_nics:
            return
        for nic in spec.nics:
            try:
                self.network.plug(nic)
            except NetworkError as exc:
                raise HypervisorError(f"instance {spec.id}: NIC {nic.tap}: {exc}") from exc

    def _unplug(self, item: dict[str, Any]) -> None:
        if self.network is None or self.driver.makes_own_nics:
            return
        for nic in item.get("nics") or ():
            try:
                self.network.unplug(tap_name(nic["port_id"]))
            except NetworkError as exc:  # the network pass removes it once the port goes
                log.warning("instance %s: %s", item["id"], exc)

    def _step(self, item: dict[str, Any]) -> None:
        instance_id, desired = item["id"], item["desired_power"]
        if desired == "deleted":
            self.driver.destroy(instance_id)
            self._unplug(item)
            self._report(instance_id, {"power": "absent"}, force=True)
            return
        if item["state"] == "error":
            return  # leave it for the user to look at and delete
        seen = self.driver.status(instance_id)
        if seen.power is PowerState.absent:
            self._report(instance_id, {"power": "absent", "phase": "building"})
            self.driver.create(self._spec(item))
            seen = self.driver.status(instance_id)
        if desired == "running":
            seen = self._ensure_running(item, seen)
        elif desired == "stopped" and seen.power in (PowerState.running, PowerState.paused):
            self.driver.stop(instance_id, timeout=STOP_TIMEOUT)
            seen = self.driver.status(instance_id)
        extra: dict[str, Any] = {}
        task_key = f"{item.get('task')}@{item.get('task_deadline')}"
        if self._done_tasks.get(instance_id) == task_key:
            extra["completed_task"] = item.get("task")
        console_log = self._new_console(instance_id)
        if console_log is not None:
            extra["console_log"] = console_log
        self._report(
            instance_id,
            {"power": seen.power.value, "console": seen.console, **extra},
            force=console_log is not None,
        )

    def _ensure_running(self, item: dict[str, Any], seen: Observed) -> Observed:
        instance_id, task = item["id"], item.get("task")
        task_key = f"{task}@{item.get('task_deadline')}"
        if seen.power in (PowerState.stopped, PowerState.crashed):
            if seen.power is PowerState.crashed:
                log.warning("instance %s crashed; starting it again", instance_id)
            self._report(instance_id, {"power": seen.power.value, "phase": "booting"})
            spec = self._spec(item)
            self._plug(spec)
            self.driver.start(spec)
            self.last_start = time.monotonic()
        elif seen.power is PowerState.paused:
            self.driver.resume(instance_id)
        elif task in ("reboot", "reboot_hard") and self._done_tasks.get(instance_id) != task_key:
            self.driver.reboot(instance_id, hard=task == "reboot_hard")
            self._done_tasks[instance_id] = task_key
            self.last_start = time.monotonic()
        return self.driver.status(instance_id)

    # reporting ----------------------------------------------------------------------------

    def _report(self, instance_id: str, body: dict[str, Any], *, force: bool = False) -> None:
        key = tuple(sorted((k, repr(v)) for k, v in body.items() if k != "console_log"))
        last = self._last_report.get(instance_id)
        now = time.monotonic()
        if not force and last and last[0] == key and now - last[1] < REPORT_EVERY:
            return
        known = self.client.report(instance_id, body)
        self._last_report[instance_id] = (key, now)
        if not known:
            log.info("instance %s: the controller no longer knows it; destroying", instance_id)
            self.driver.destroy(instance_id)

    def _new_console(self, instance_id: str) -> str | None:
        """The console log, when it grew since it was last sent (at most once a second); it
        rides on the instance's report rather than costing a request of its own."""
        try:
            text = self.driver.console_log(instance_id)
        except HypervisorError:
            return None
        sent = self._console_sent.get(instance_id)
        now = time.monotonic()
        if sent and (sent[0] == len(text) or now - sent[1] < CONSOLE_EVERY):
            return None
        self._console_sent[instance_id] = (len(text), now)
        return text

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _nic(data: dict[str, Any]) -> Nic:
    """A desired instance's NIC (``{"port_id", "mac", "network_id", "mtu"}``), with its
    device names derived as the network agent derives them."""
    return Nic(
        port_id=str(data["port_id"]),
        mac=str(data["mac"]).lower(),
        tap=tap_name(str(data["port_id"])),
        bridge=bridge_name(str(data["network_id"])),
        mtu=int(data.get("mtu") or 1500),
    )


def parse_networks(value: Any) -> HostNetworks | None:
    """The optional ``networks`` of the desired state; None when absent or unreadable (the
    agent then leaves the host's networking as it is rather than tear it down)."""
    if value is None:
        return None
    try:
        return from_json(value)
    except (TypeError, ValueError, AttributeError) as exc:
        log.error("network: unreadable desired networks: %s", exc)
        return None
