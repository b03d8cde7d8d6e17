"""Token issue and validation throughput, in-process and over HTTP.

    .venv/bin/python bench/identity.py [--n N] [--http-n N] [--database-url URL]

In-process: ``AuthService.authenticate_password`` (issue, with the production argon2id cost from
``nubes.config.PasswordHashing``), ``AuthService.authenticate_token`` (issue by re-scoping, which
leaves out the deliberate argon2id cost) and ``AuthService.validate``, sequentially.

Over HTTP: a real controller (``python -m nubes.controller.run``) on a free loopback port with a
temporary state directory; ``POST /v1/auth/tokens`` (password and token methods) and
``GET /v1/auth/tokens`` with ``X-Subject-Token`` (the API validates the caller's token and the
subject token: two validations a request), from 1 and from 8 client threads.

SQLite in the temporary state directory unless ``--database-url`` names another database (for
PostgreSQL: postgresql+psycopg://user:pass@127.0.0.1/db). That database is initialised if it is
empty; the bench signs in as its admin when it made it, otherwise as a bench user it removes
afterwards. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from common import controller, stop_cleanly_on_sigterm  # bench/common.py
from nubes.api.services import Services
from nubes.config import PasswordHashing, Settings
from nubes.controller.bootstrap import PASSWORD_FILE, initialise
from nubes.domain.context import RequestContext
from nubes.domain.errors import NotFound
from nubes.store.db import Database

KEYSTONE_P50_MS = (76, 195)  # Keystone's published authenticate p50, for comparison
GOAL_ISSUE_P50_MS = 10.0
GOAL_VALIDATIONS_PER_S = 2000.0
WARMUP = 5


@dataclass(frozen=True)
class Result:
    label: str
    concurrency: int
    latencies: list[float]  # seconds, one per call
    wall: float  # seconds, for all calls

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall

    def percentile_ms(self, p: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


@dataclass(frozen=True)
class Login:
    username: str
    password: str


def measure(label: str, n: int, call: Callable[[], object], concurrency: int = 1) -> Result:
    """Run ``call`` n times from ``concurrency`` threads; time each call and the whole."""
    for _ in range(WARMUP):
        call()
    remaining = iter(range(n))
    lock = threading.Lock()

    def worker() -> list[float]:
        times: list[float] = []
        while True:
            with lock:
                if next(remaining, None) is None:
                    return times
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        parts = [pool.submit(worker) for _ in range(concurrency)]
        latencies = [t for part in parts for t in part.result()]
    return Result(label, concurrency, latencies, time.perf_counter() - started)


@contextlib.contextmanager
def signed_in(settings: Settings) -> Iterator[Login]:
    """Initialise the cloud; yield the admin when this run made it, otherwise a bench user,
    removed on the way out."""
    initialise(settings)
    password_file = settings.state_dir / PASSWORD_FILE
    if password_file.exists():
        yield Login(settings.admin_user, password_file.read_text().strip())
        return
    system = RequestContext.system()
    name, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    db = Database(settings.effective_database_url)
    users = Services.build(settings, db).users
    try:
        users.create(system, name, password, project=settings.admin_project, role="member")
        yield Login(name, password)
    finally:
        with contextlib.suppress(NotFound):
            users.delete(system, name)
        db.dispose()


def in_process(settings: Settings, login: Login, n_issue: int, n_validate: int) -> list[Result]:
    db = Database(settings.effective_database_url)
    try:
        auth = Services.build(settings, db).auth
        token = auth.authenticate_password(login.username, login.password).token
        results = [
            measure(
                "issue: password (argon2id)",
                n_issue,
                lambda: auth.authenticate_password(login.username, login.password),
            ),
            measure("issue: re-scope token", n_issue, lambda: auth.authenticate_token(token)),
            measure("validate", n_validate, lambda: auth.validate(token)),
        ]
    finally:
        db.dispose()
    return results


def over_http(url: str, login: Login, n_issue: int, n_validate: int) -> list[Result]:
    """One keep-alive httpx client per client thread."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=30)
            clients.append(local.client)
        return local.client  # type: ignore[no-any-return]

    def post(body: dict[str, str]) -> str:
        response = client().post("/v1/auth/tokens", json=body)
        if response.status_code != 201:
            raise SystemExit(f"POST /v1/auth/tokens: {response.status_code} {response.text}")
        return response.headers["X-Subject-Token"]

    token = post({"username": login.username, "password": login.password})
    headers = {"X-Auth-Token": token, "X-Subject-Token": token}

    def validate() -> None:
        response = client().get("/v1/auth/tokens", headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"GET /v1/auth/tokens: {response.status_code} {response.text}")

    results = []
    try:
        for concurrency in (1, 8):
            results += [
                measure(
                    "POST /v1/auth/tokens password",
                    n_issue,
                    lambda: post({"username": login.username, "password": login.password}),
                    concurrency,
                ),
                measure(
                    "POST /v1/auth/tokens token",
                    n_issue,
                    lambda: post({"token": token}),
                    concurrency,
                ),
                measure("GET /v1/auth/tokens", n_validate, validate, concurrency),
            ]
    finally:
        for each in clients:
            each.close()
    return results


def print_table(title: str, results: list[Result]) -> None:
    print(f"\n{title}")
    print(f"  {'operation':<32} {'n':>6} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(
            f"  {r.label:<32} {len(r.latencies):>6} {r.concurrency:>4} {r.rate:>9.0f} "
            f"{r.percentile_ms(50):>8.2f} {r.percentile_ms(99):>8.2f}"
        )


def verdict(local: list[Result], http: list[Result]) -> str:
    by = {(r.label, r.concurrency): r for r in local + http}
    password = by[("issue: password (argon2id)", 1)].percentile_ms(50)
    rescope = by[("issue: re-scope token", 1)].percentile_ms(50)
    http_password = by[("POST /v1/auth/tokens password", 1)].percentile_ms(50)
    validations = by[("validate", 1)].rate
    http_validations = max(by[("GET /v1/auth/tokens", c)].rate for c in (1, 8))

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    low, high = KEYSTONE_P50_MS
    return (
        f"goals: issue p50 <= {GOAL_ISSUE_P50_MS:.0f} ms: {mark(rescope <= GOAL_ISSUE_P50_MS)} "
        f"by re-scope ({rescope:.2f} ms), {mark(password <= GOAL_ISSUE_P50_MS)} by password "
        f"({password:.1f} ms, argon2id by design); validation >= {GOAL_VALIDATIONS_PER_S:,.0f}/s: "
        f"{mark(validations >= GOAL_VALIDATIONS_PER_S)} in-process ({validations:,.0f}/s), "
        f"{mark(http_validations >= GOAL_VALIDATIONS_PER_S)} over HTTP "
        f"({http_validations:,.0f} req/s, each validating 2 tokens); Keystone authenticate "
        f"p50 {low}-{high} ms vs nubes password over HTTP {http_password:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="in-process issues (validations: 10x)")
    parser.add_argument("--http-n", type=int, default=200, help="HTTP issues (validations: 10x)")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()

    state_dir = Path(tempfile.mkdtemp(prefix="nubes-bench-"))
    settings = Settings(state_dir=state_dir, database_url=args.database_url)
    hashing = PasswordHashing()
    engine = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    print(
        f"nubes identity bench: {engine}, argon2id m={hashing.memory_kib} KiB "
        f"t={hashing.time_cost} p={hashing.parallelism}, {os.cpu_count()} CPUs"
    )
    try:
        with signed_in(settings) as login:
            local = in_process(settings, login, args.n, args.n * 10)
            print_table("in-process (AuthService, sequential)", local)
            with controller(state_dir, args.database_url) as url:
                http = over_http(url, login, args.http_n, args.http_n * 10)
            print_table(f"over HTTP ({url}, httpx, 1 and 8 client threads)", http)
        print()
        print(verdict(local, http))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
