"""What this host is (join facts) and how it is doing (heartbeat metrics). Read from /proc."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any


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


def metrics(state_dir: Path, running: int) -> dict[str, Any]:
    mem = _meminfo()
    load1, load5, _ = os.getloadavg()
    disk = shutil.disk_usage(state_dir)
    cpus = os.cpu_count() or 1
    return {
        "CPU_COUNT": cpus,
        "LOAD1": round(load1, 2),
        "LOAD5": round(load5, 2),
        "USED_CPU": round(min(100.0, 100.0 * load1 / cpus), 1),
        "TOTAL_MEMORY": mem.get("MemTotal", 0),
        "FREE_MEMORY": mem.get("MemAvailable", 0),
        "FREE_DISK": disk.free // (1 << 30),
        "RUNNING_VMS": running,
    }
