"""The pure scheduler: ``schedule()`` and ``Snapshot.updated()`` at 1,000 and 10,000 hosts.

    .venv/bin/python bench/scheduler_core.py [--n N] [--sizes 1000,10000] [--seed S] [--no-freeze]

Hosts vary as a real cloud's do: four zones, qemu and lxc drivers, a few aarch64 machines,
2 % disabled and 3 % down, fill levels from empty to full, per-host ratios, agent metrics
(LOAD1, USED_CPU, FREE_MEMORY …) with some hosts not reporting some of them, a string metric
on a few, and aggregate metadata on a third. Requests rotate through typical shapes, each with
capacity, image kind, a REQUIREMENTS expression and a RANK. Refreshes replace 50 hosts with new
allocations and metrics (and, in the second row, one host joins and one leaves).

No database and no I/O: this is the scheduler's share of the per-placement budget
(p99 ≤ 3 ms for ``schedule`` and ≤ 2 ms for a 50-host refresh at 10,000 hosts). Each call is
timed on the wall clock and on the thread's CPU clock: on a shared machine the first has
other processes' load in it, the second does not. Before timing, what the bench keeps for
good is frozen out of the garbage collector (``gc.freeze()``, as a controller can do after
building its snapshot); ``--no-freeze`` measures without.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import time
from collections.abc import Callable, Sequence

from common import percentile, stop_cleanly_on_sigterm  # bench/common.py
from nubes.scheduler import (
    Config,
    HostView,
    Request,
    Snapshot,
    explain,
    parse_rank,
    parse_requirements,
    schedule,
)

ZONES = ("eu-1", "eu-2", "us-1", "ap-1")
WARMUP = 20
GOAL_SCHEDULE_P99_MS = 3.0
GOAL_UPDATE_P99_MS = 2.0
GOAL_EXPLAIN_MS = 50.0


def make_host(rng: random.Random, i: int) -> HostView:
    driver = "lxc" if rng.random() < 0.3 else "qemu"
    vcpus = rng.choice((16, 32, 64, 128))
    ram_mb = vcpus * rng.choice((2048, 4096, 8192))
    disk_gb = rng.choice((500, 1000, 2000, 4000))
    fill = rng.random()
    cpu_ratio = rng.choice((1.0, 2.0, 4.0))
    metrics: dict[str, float | str] = {
        "CPU_COUNT": vcpus,
        "LOAD1": round(rng.random() * vcpus * 0.8, 2),
        "TOTAL_MEMORY": ram_mb,
        "FREE_MEMORY": int(ram_mb * (1 - fill) * rng.uniform(0.8, 1.0)),
        "FREE_DISK": int(disk_gb * (1 - fill)),
        "RUNNING_VMS": int(fill * vcpus / 2),
    }
    if rng.random() < 0.9:  # some agents are old and do not report it
        metrics["USED_CPU"] = round(rng.random() * 100, 1)
    if rng.random() < 0.05:
        metrics["GPU_MODEL"] = rng.choice(("a100", "h100", "l4"))
    metadata = {"ssd": "true", "tier": rng.choice(("gold", "silver"))} if i % 3 == 0 else {}
    state = "monitored" if rng.random() > 0.03 else "error"
    return HostView(
        id=f"h{i:06d}",
        name=f"node-{i:05d}",
        state=state,
        enabled=rng.random() > 0.02,
        driver=driver,
        arch="aarch64" if rng.random() < 0.1 else "x86_64",
        zone=rng.choice(ZONES),
        aggregate_metadata=metadata,
        vcpus=vcpus,
        ram_mb=ram_mb,
        disk_gb=disk_gb,
        allocated_vcpus=int(vcpus * cpu_ratio * fill),
        allocated_ram_mb=int(ram_mb * fill),
        allocated_disk_gb=int(disk_gb * fill),
        cpu_ratio=cpu_ratio,
        image_kinds=frozenset({"rootfs", "disk"}) if driver == "lxc" else frozenset({"disk"}),
        accelerated=driver == "qemu",
        metrics=metrics,
        instances=int(fill * vcpus / 2),
        max_instances=rng.choice((None, None, None, 64)),
    )


def requests() -> list[Request]:
    return [
        Request(
            vcpus=2,
            ram_mb=4096,
            disk_gb=20,
            image_kinds=("disk",),
            requirements=parse_requirements("USED_CPU < 80 & FREE_MEMORY > 8192"),
            rank=parse_rank("FREE_MEMORY / 1024 - LOAD1"),
        ),
        Request(
            vcpus=4,
            ram_mb=8192,
            disk_gb=40,
            image_kinds=("disk", "rootfs"),
            zone="eu-1",
            requirements=parse_requirements('HOSTNAME = "node-*" & !(LOAD1 > 40)'),
            rank=parse_rank("-RUNNING_VMS"),
        ),
        Request(
            vcpus=1,
            ram_mb=1024,
            disk_gb=10,
            image_kinds=("rootfs",),
            arch="x86_64",
            extra_specs={"aggregate:ssd": "true", "hw:cpu_policy": "dedicated"},
            requirements=parse_requirements("FREE_DISK >= 100 | CPU_COUNT >= 64"),
            rank=parse_rank("FREE_VCPUS * 2 + FREE_MEMORY / 1024"),
        ),
    ]


@dataclasses.dataclass(frozen=True)
class Result:
    label: str
    size: int
    wall: list[float]  # seconds per call, by the clock on the wall
    cpu: list[float]  # seconds per call on this thread's CPU: what others' load does not add
    total: float  # seconds for all calls

    def line(self) -> str:
        walls = (percentile(self.wall, p) * 1000 for p in (50, 99))
        cpus = (percentile(self.cpu, p) * 1000 for p in (50, 99))
        rate = len(self.wall) / self.total
        return f"  {self.label:<30} {self.size:>6} {len(self.wall):>5} {rate:>8.0f} " + " ".join(
            f"{v:>8.3f}" for v in (*walls, *cpus)
        )


def timed(label: str, size: int, calls: Sequence[Callable[[], object]]) -> Result:
    for call in calls[:WARMUP]:
        call()
    wall, cpu = [], []
    started = time.perf_counter()
    for call in calls:
        t0, c0 = time.perf_counter(), time.thread_time()
        call()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    return Result(label, size, wall, cpu, time.perf_counter() - started)


def bench_size(size: int, n: int, seed: int, freeze: bool) -> list[Result]:
    rng = random.Random(seed)
    hosts = [make_host(rng, i) for i in range(size)]
    t0 = time.perf_counter()
    snapshot = Snapshot.build(hosts)
    print(f"  (build of {size} hosts: {(time.perf_counter() - t0) * 1000:.0f} ms)")
    shapes = requests()
    configs = (Config(weigher="spread"), Config(weigher="pack"), Config(weigher="load"))
    results = []

    calls = [
        (lambda r=shapes[i % len(shapes)], c=configs[i % 3]: schedule(snapshot, r, c))
        for i in range(n)
    ]
    batch = dataclasses.replace(shapes[0], count=10)
    changes = []
    for _ in range(n):
        picked = rng.sample(range(size), 50)
        changes.append([make_host(rng, i) for i in picked])
    churn = []
    for k in range(n):
        leaving = f"h{rng.randrange(size):06d}"
        joining = dataclasses.replace(make_host(rng, size + k), name=f"node-{rng.random()}")
        churn.append(([*changes[k][:49], joining], [leaving]))
    impossible = dataclasses.replace(shapes[0], ram_mb=10**9)
    placed = sum(1 for r in shapes for c in configs if schedule(snapshot, r, c).placements)
    # what the process holds for good is moved out of the collector's way, as a controller
    # would after building its snapshot (otherwise a full collection over ~50,000 objects
    # lands in some unlucky call)
    gc.collect()
    if freeze:
        gc.freeze()
    results = [
        timed("schedule, count=1", size, calls),
        timed(
            "schedule, count=10 (per call)", size, [lambda: schedule(snapshot, batch)] * (n // 10)
        ),
        timed("updated, 50 changed", size, [lambda c=c: snapshot.updated(c, ()) for c in changes]),
        timed(
            "updated, 49 + 1 joins, 1 leaves",
            size,
            [lambda c=c, r=r: snapshot.updated(c, r) for c, r in churn],
        ),
        timed("explain (nothing fits)", size, [lambda: explain(snapshot, impossible)] * 50),
    ]
    gc.unfreeze()
    print(f"  ({placed} of {len(shapes) * len(configs)} sample requests placed)")
    return results


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per measurement and size")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-freeze", action="store_true", help="leave long-lived objects to the collector"
    )
    args = parser.parse_args()
    print("scheduler core (pure, in-process)")
    results: list[Result] = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"\n{size} hosts")
        results += bench_size(size, args.n, args.seed, freeze=not args.no_freeze)
    print(
        f"\n  {'operation':<30} {'hosts':>6} {'n':>5} {'calls/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'cpu p50':>8} {'cpu p99':>8}"
    )
    for result in results:
        print(result.line())
    print(
        f"\n  goals at 10,000 hosts: schedule p99 ≤ {GOAL_SCHEDULE_P99_MS} ms, "
        f"updated (50) p99 ≤ {GOAL_UPDATE_P99_MS} ms, explain ≤ {GOAL_EXPLAIN_MS} ms"
    )
    print("  (wall = elapsed; cpu = this thread's CPU time, unaffected by other processes)")


if __name__ == "__main__":
    main()
