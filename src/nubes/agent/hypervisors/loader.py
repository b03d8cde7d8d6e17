"""Import every driver so it registers itself, and pick one for this host."""

from __future__ import annotations

import importlib
import logging

from nubes.agent.hypervisors.base import Hypervisor, HypervisorError, registered

log = logging.getLogger("nubes.agent")

DRIVER_MODULES = ("fake", "qemu", "lxc")
#: `auto` prefers real guests: qemu when QEMU is installed, else lxc, else fake.
AUTO_ORDER = ("qemu", "lxc", "fake")


def load_all() -> dict[str, type[Hypervisor]]:
    for name in DRIVER_MODULES:
        try:
            importlib.import_module(f"nubes.agent.hypervisors.{name}")
        except ImportError as exc:  # a driver whose module is missing is simply not offered
            log.debug("driver %s not available: %s", name, exc)
    return registered()


def choose(name: str) -> type[Hypervisor]:
    drivers = load_all()
    if name != "auto":
        if name not in drivers:
            known = ", ".join(sorted(drivers)) or "none"
            raise HypervisorError(f"no driver {name!r} (available: {known})", retryable=False)
        why = drivers[name].probe()
        if why is not None:
            raise HypervisorError(f"driver {name!r} cannot run here: {why}", retryable=False)
        return drivers[name]
    for candidate in AUTO_ORDER:
        if candidate in drivers and drivers[candidate].probe() is None:
            return drivers[candidate]
    raise HypervisorError("no usable hypervisor driver on this host", retryable=False)
