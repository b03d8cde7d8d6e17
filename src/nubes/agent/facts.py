"""What this host is (join facts) and how it is doing (each monitoring cycle's metrics).

Built-in metrics are read from /proc and ``statvfs``; names are UPPER_SNAKE (the scheduler's
REQUIREMENTS and RANK expressions use them) and values numbers, except the string attributes
in ``nubes.domain.probes.STRING_METRICS``. CPU follows OpenNebula: 100 per CPU, so on 4 CPUs
``USED_CPU`` is 0 to 400 and ``FREE_CPU`` is ``100 * CPU_COUNT - USED_CPU``; it is measured
from /proc/stat between two cycles (the first cycle measures since boot), not from the load
average. Memory and datastore sizes are MB. The operator's probes (:mod:`nubes.agent.probes`)
add to these.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nubes.agent.probes import InstalledProbes

MB = 1 << 20
#: built-in attributes that are strings (operator probes only give numbers)
DEFAULT_DATASTORE = "default"


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) // 1024  # MB
    except (OSError, ValueError, IndexError):
        pass
    return values


def facts(state_dir: Path) -> dict[str, Any]:
    disk = shutil.disk_usage(state_dir)
    return {
        "vcpus": os.cpu_count() or 1,
        "ram_mb": _meminfo().get("MemTotal", 0),
        "disk_gb": disk.total // (1 << 30),
        "arch": platform.machine() or "x86_64",
    }


class CpuSampler:
    """Busy CPU between two reads of /proc/stat (idle and iowait count as not busy)."""

    #: fewer ticks than this since the last read (a cycle run at once after a probe install)
    #: is too short to measure: the previous value stands
    MIN_TICKS = 50

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self.stat = stat
        self.last: tuple[int, int] = (0, 0)  # (total, idle) jiffies; zero: measure since boot
        self.fraction = 0.0

    def _read(self) -> tuple[int, int]:
        fields = self.stat.read_text().splitlines()[0].split()
        # user nice system idle iowait irq softirq steal (guest time is already in user/nice)
        ticks = [int(v) for v in fields[1:9]]
        return sum(ticks), ticks[3] + ticks[4]

    def busy_fraction(self) -> float:
        try:
            total, idle = self._read()
        except (OSError, ValueError, IndexError):
            return 0.0
        spent, rested = total - self.last[0], idle - self.last[1]
        if spent >= self.MIN_TICKS:
            self.last = (total, idle)
            self.fraction = min(1.0, max(0.0, 1.0 - rested / spent))
        return self.fraction


def datastore_metrics(datastores: Mapping[str, Path]) -> dict[str, int]:
    """``DS_<NAME>_TOTAL_MB``, ``_FREE_MB`` (what an unprivileged writer may still use) and
    ``_USED_MB`` per datastore; one that cannot be read is left out."""
    out: dict[str, int] = {}
    for name, path in sorted(datastores.items()):
        label = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")[:40] or "DS"
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        out[f"DS_{label}_TOTAL_MB"] = usage.total // MB
        out[f"DS_{label}_FREE_MB"] = usage.free // MB
        out[f"DS_{label}_USED_MB"] = usage.used // MB
    return out


@dataclass(frozen=True)
class HostKind:
    """What does not change while the agent runs: its driver, KVM, architecture."""

    hypervisor: str
    accelerated: bool
    arch: str = platform.machine() or "x86_64"


class Monitor:
    """One monitoring cycle: the built-in metrics, then every installed probe."""

    def __init__(
        self,
        kind: HostKind,
        datastores: Mapping[str, Path],
        probes: InstalledProbes,
    ) -> None:
        self.kind = kind
        self.datastores = dict(datastores)
        self.probes = probes
        self.cpu = CpuSampler()

    def builtin(self, running: int) -> dict[str, Any]:
        cpus = os.cpu_count() or 1
        used_cpu = round(100.0 * cpus * self.cpu.busy_fraction(), 1)
        mem = _meminfo()
        total, free = mem.get("MemTotal", 0), mem.get("MemAvailable", 0)
        load1, load5, _ = os.getloadavg()
        return {
            "CPU_COUNT": cpus,
            "USED_CPU": used_cpu,
            "FREE_CPU": round(100.0 * cpus - used_cpu, 1),
            "LOAD1": round(load1, 2),
            "LOAD5": round(load5, 2),
            "TOTAL_MEMORY": total,
            "FREE_MEMORY": free,
            "USED_MEMORY": max(0, total - free),
            **datastore_metrics(self.datastores),
            "RUNNING_VMS": running,
            "KVM": 1 if self.kind.accelerated else 0,
            "HYPERVISOR": self.kind.hypervisor,
            "ARCH": self.kind.arch,
        }

    def collect(self, running: int) -> tuple[dict[str, Any], dict[str, str]]:
        """This cycle's metrics (built-in and from probes) and probe errors."""
        metrics = self.builtin(running)
        extra, errors = self.probes.run(reserved=metrics.keys())
        return {**metrics, **extra}, errors
