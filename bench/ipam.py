"""IPAM under load: 1,000 ``POST /v1/ports`` at concurrency 50 on one /22 subnet.

    .venv/bin/python bench/ipam.py                      # PostgreSQL (installed and started by
                                                        # scripts/postgres.sh; a fresh database)
    .venv/bin/python bench/ipam.py --database sqlite    # SQLite in the temp state directory
    .venv/bin/python bench/ipam.py --n 1000 --concurrency 50 --prefix 22

A real controller runs as a subprocess on loopback. The bench makes a vxlan network with one
/22 subnet (1,021 addresses), then fires the creates through httpx, all at once up to the
concurrency. It prints successes, failures, duplicate addresses (among the answers, and in the
database: live allocations, distinct addresses and ports must all equal the successes),
latency p50/p95/max and throughput, beside Neutron's published create_port at concurrency 50
(Rally, Neutron scale testing: p50 1.1 s, p95 5.6 s).

Everything it makes (controller process, temp directory, the PostgreSQL database) is removed
at the end, on Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from common import controller, percentile, stop_cleanly_on_sigterm  # bench/common.py
from nubes.store.db import Database
from nubes.store.models import IpAllocation, Port
from nubes.subp import subp

ROOT = Path(__file__).resolve().parents[1]
FAST_CONFIG = """listen_host = "127.0.0.1"
[password_hashing]
memory_kib = 1024
time_cost = 1
parallelism = 1
"""
NEUTRON = {"p50": 1.1, "p95": 5.6}


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL (scripts/postgres.sh), dropped afterwards."""
    base = subp(["bash", str(ROOT / "scripts" / "postgres.sh")], timeout=600).stdout
    url = make_url(base.strip().splitlines()[-1])
    name = f"nubes_bench_ipam_{os.getpid()}"
    port = str(url.port or 5432)
    subp(["su", "postgres", "-c", f"createdb -p {port} -O {url.username} {name}"])
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        subp(["su", "postgres", "-c", f"dropdb -p {port} --if-exists --force {name}"], check=False)


def admin_client(url: str, state: Path) -> httpx.Client:
    password = (state / "admin-password").read_text().strip()
    client = httpx.Client(base_url=url, timeout=60)
    answer = client.post("/v1/auth/tokens", json={"username": "admin", "password": password})
    answer.raise_for_status()
    client.headers["X-Auth-Token"] = answer.json()["token"]
    return client


def prepare(client: httpx.Client, prefix: int) -> tuple[str, str]:
    unlimited = {"ports": -1, "networks": -1, "subnets": -1}
    client.patch("/v1/quotas/admin", json={"limits": unlimited}).raise_for_status()
    net = client.post("/v1/networks", json={"name": "bench"})
    net.raise_for_status()
    sub = client.post(
        "/v1/subnets",
        json={"name": "bench", "network_id": net.json()["id"], "cidr": f"10.100.0.0/{prefix}"},
    )
    sub.raise_for_status()
    return net.json()["id"], sub.json()["id"]


async def fire(
    url: str, token: str, network_id: str, n: int, concurrency: int
) -> tuple[list[float], list[str], Counter[str], float]:
    """``n`` creates, ``concurrency`` in flight; returns latencies of the successes, their
    addresses, the failures by status and code, and the wall time."""
    latencies: list[float] = []
    addresses: list[str] = []
    failures: Counter[str] = Counter()
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-Auth-Token": token}, timeout=120, limits=limits
    ) as http:

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                try:
                    r = await http.post("/v1/ports", json={"network_id": network_id})
                except httpx.HTTPError as exc:
                    failures[type(exc).__name__] += 1
                    continue
                if r.status_code == 201:
                    latencies.append(time.perf_counter() - started)
                    addresses.extend(f["ip_address"] for f in r.json()["fixed_ips"])
                else:
                    failures[f"{r.status_code} {r.json().get('error', {}).get('code')}"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, addresses, failures, time.perf_counter() - started


def database_check(database_url: str, network_id: str) -> tuple[int, int, int]:
    """(ports, live allocations, distinct live addresses) on the bench network."""
    db = Database(database_url)
    try:
        with db.read() as session:
            ports = select(Port.id).where(Port.network_id == network_id)
            live = IpAllocation.port_id.in_(ports)
            return (
                int(session.scalar(select(func.count()).select_from(ports.subquery())) or 0),
                int(session.scalar(select(func.count()).where(live)) or 0),
                int(
                    session.scalar(
                        select(func.count(func.distinct(IpAllocation.ip_address))).where(live)
                    )
                    or 0
                ),
            )
    finally:
        db.dispose()


def run(database_url: str, label: str, n: int, concurrency: int, prefix: int) -> None:
    with tempfile.TemporaryDirectory(prefix="nubes-bench-ipam-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        (state / "nubes.toml").write_text(FAST_CONFIG)
        with controller(state, database_url) as url:
            client = admin_client(url, state)
            network_id, _ = prepare(client, prefix)
            token = str(client.headers["X-Auth-Token"])
            client.close()
            latencies, addresses, failures, wall = asyncio.run(
                fire(url, token, network_id, n, concurrency)
            )
            stored = database_check(database_url or f"sqlite:///{state / 'nubes.db'}", network_id)
    report(label, n, concurrency, prefix, latencies, addresses, failures, wall, stored)


def report(
    label: str,
    n: int,
    concurrency: int,
    prefix: int,
    latencies: list[float],
    addresses: list[str],
    failures: Counter[str],
    wall: float,
    stored: tuple[int, int, int],
) -> None:
    duplicates = sum(c - 1 for c in Counter(addresses).values() if c > 1)
    ports, live, distinct = stored
    pool = 2 ** (32 - prefix) - 3
    print(
        f"ipam on {label}: {n} POST /v1/ports at concurrency {concurrency}, "
        f"one /{prefix} ({pool} addresses)"
    )
    print(f"  successes   {len(latencies)}")
    print(f"  failures    {sum(failures.values())} {dict(failures) if failures else ''}")
    print(f"  duplicates  {duplicates} in the answers; database: {ports} ports, {live} live "
          f"allocations, {distinct} distinct addresses")  # fmt: skip
    ms = [v * 1000 for v in latencies] or [float("nan")]
    print(
        f"  latency     p50 {percentile(ms, 50):.1f} ms   p95 {percentile(ms, 95):.1f} ms   "
        f"max {max(ms):.1f} ms"
    )
    print(f"  throughput  {len(latencies) / wall:.1f} creates/s ({wall:.1f} s wall)")
    print(
        f"  Neutron create_port at concurrency 50: p50 {NEUTRON['p50']} s, p95 {NEUTRON['p95']} s"
    )
    if duplicates or not ports == live == distinct == len(latencies):
        raise SystemExit("  INCONSISTENT: an address was handed out twice, or a port was lost")
    print("  consistent: every success has its own address, in the answers and the database")


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--database-url", default="", help="Use this PostgreSQL database as is.")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--prefix", type=int, default=22, help="The subnet's prefix length.")
    args = parser.parse_args()
    if args.database == "sqlite":
        run("", "SQLite", args.n, args.concurrency, args.prefix)
    elif args.database_url:
        run(args.database_url, "PostgreSQL", args.n, args.concurrency, args.prefix)
    else:
        with postgres_database() as url:
            run(url, "PostgreSQL", args.n, args.concurrency, args.prefix)


if __name__ == "__main__":
    main()
