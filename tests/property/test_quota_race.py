"""Quotas under concurrency: random interleavings of keypair creates, deletes and creates that
fail half-way never push usage over the limit, and usage always equals the live keypairs.

Failures are injected into ``nubes.store.events.record``, the last write of
``KeypairService.create``: after the quota charge and the row insert, before the commit, so the
transaction must roll back all three. On SQLite the writers queue behind ``BEGIN IMMEDIATE``; on
PostgreSQL (NUBES_TEST_DATABASE_URL) the threads really race on the quota row.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nubes.api.services import Services
from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, NotFound, QuotaExceeded
from nubes.store import events
from nubes.store.models import Event, Keypair, QuotaUsage
from tests.conftest import Cloud

NAMES = [f"key-{i}" for i in range(6)]
# One real key per name, made once: key generation is not what is under test.
PUBLIC_KEYS = {
    name: Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    .decode()
    + f" {name}"
    for name in [*NAMES, *(f"kp-{i}" for i in range(20))]
}
TIMEOUT = 60.0

# SQLAlchemy only warns when an ORM DELETE matches no row (another transaction deleted it
# first). Production runs with warnings as warnings, so these tests must too, to see what
# production does with the data rather than stop at the warning.


class InjectedFailure(Exception):
    """Raised inside a create's transaction, after the quota charge and the row insert."""


@dataclass(frozen=True)
class Race:
    """One racer: a member of a project of their own, so no example sees another's usage."""

    services: Services
    admin: RequestContext
    member: RequestContext
    project_id: str
    user_id: str


class Arena:
    """Makes a fresh project and member per example: a broken example cannot leak its usage
    into the next one (which would make every later example fail and misdirect shrinking)."""

    def __init__(self, services: Services, admin_password: str) -> None:
        self.services = services
        self.admin = services.auth.authenticate_password("admin", admin_password).context
        self.count = itertools.count()

    def new_race(self, limit: int) -> Race:
        n = next(self.count)
        services = self.services
        project = services.projects.create(self.admin, f"racing-{n}")
        user = services.users.create(
            self.admin, f"racer-{n}", "racer-password", project=project.id, role="member"
        )
        member = services.auth.authenticate_password(f"racer-{n}", "racer-password").context
        services.quotas.update(self.admin, project.id, {"key_pairs": limit})
        return Race(services, self.admin, member, project.id, user.id)


@pytest.fixture
def arena(cloud: Cloud) -> Arena:
    return Arena(cloud.services, cloud.admin_password)


def live_keypairs(race: Race) -> list[str]:
    """The racer's keypairs, read in a transaction of its own."""
    with race.services.db.read() as session:
        return list(session.scalars(select(Keypair.name).where(Keypair.user_id == race.user_id)))


def usage_row(race: Race) -> int:
    with race.services.db.read() as session:
        in_use = session.scalar(
            select(QuotaUsage.in_use).where(
                QuotaUsage.project_id == race.project_id,
                QuotaUsage.user_id == race.user_id,
                QuotaUsage.resource == "key_pairs",
            )
        )
    return in_use or 0


def reported_usage(race: Race) -> int:
    return race.services.quotas.show(race.admin, race.project_id).in_use["key_pairs"]


def last_event_id(race: Race) -> int:
    with race.services.db.read() as session:
        return session.scalar(select(func.max(Event.id))) or 0


def events_since(race: Race, after_id: int) -> Counter[str]:
    with race.services.db.read() as session:
        kinds = session.scalars(
            select(Event.kind).where(Event.id > after_id, Event.actor_id == race.user_id)
        )
        return Counter(kinds)


@dataclass
class Tally:
    """What the threads saw; appended to under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[str] = field(default_factory=Counter)
    created: set[str] = field(default_factory=set)
    live_seen: list[int] = field(default_factory=list)
    usage_seen: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def add(self, outcome: str, name: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if outcome == "created":
                self.created.add(name)


class FailureInjector:
    """Replaces ``events.record``: raises for a create whose thread asked for a failure.

    The flag is thread-local, so a failing create of ``key-1`` can race a good create of
    ``key-1`` on another thread, and only the failing one is hit."""

    def __init__(self, real: Callable[..., None]) -> None:
        self.real = real
        self.local = threading.local()

    def doomed(self) -> bool:
        return bool(getattr(self.local, "doomed", False))

    def __call__(
        self,
        session: Session,
        ctx: RequestContext,
        kind: str,
        resource_type: str,
        resource_id: str,
        **kwargs: Any,
    ) -> None:
        if kind == "keypair.created" and self.doomed():
            raise InjectedFailure(f"injected failure creating {resource_id}")
        self.real(session, ctx, kind, resource_type, resource_id, **kwargs)


def perform(race: Race, injector: FailureInjector, tally: Tally, op: str, name: str) -> None:
    keypairs = race.services.keypairs
    if op == "delete":
        try:
            keypairs.delete(race.member, name)
        except NotFound:
            tally.add("not_found", name)
        else:
            tally.add("deleted", name)
        return
    injector.local.doomed = op == "fail"
    try:
        keypairs.create(race.member, name, public_key=PUBLIC_KEYS[name])
    except QuotaExceeded:
        tally.add("quota_exceeded", name)
    except AlreadyExists:
        tally.add("exists", name)
    except InjectedFailure:
        tally.add("injected", name)
    else:
        assert op == "create", f"a create doomed to fail committed {name!r}"
        tally.add("created", name)
        # Right after our commit, in a transaction of its own: never over the limit.
        live = len(live_keypairs(race))
        with tally.lock:
            tally.live_seen.append(live)
    finally:
        injector.local.doomed = False


def run_threads(
    race: Race, work: list[list[tuple[str, str]]], injector: FailureInjector, tally: Tally
) -> None:
    """Start one thread per list of operations together, with a monitor reading alongside."""
    barrier = threading.Barrier(len(work))
    stop = threading.Event()

    def worker(ops: Iterable[tuple[str, str]]) -> None:
        try:
            barrier.wait(TIMEOUT)
            for op, name in ops:
                perform(race, injector, tally, op, name)
        except BaseException as exc:
            with tally.lock:
                tally.errors.append(exc)

    def monitor() -> None:
        try:
            while not stop.is_set():
                live, in_use = len(live_keypairs(race)), usage_row(race)
                with tally.lock:
                    tally.live_seen.append(live)
                    tally.usage_seen.append(in_use)
                time.sleep(0.002)
        except BaseException as exc:
            with tally.lock:
                tally.errors.append(exc)

    watcher = threading.Thread(target=monitor, name="quota-monitor")
    threads = [
        threading.Thread(target=worker, args=(ops,), name=f"quota-race-{i}")
        for i, ops in enumerate(work)
    ]
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    stop.set()
    watcher.join(TIMEOUT)
    assert not any(t.is_alive() for t in [*threads, watcher]), "a thread hung"


# Creates twice as likely as deletes or failures, so the limit is under pressure.
OPERATION = st.tuples(
    st.sampled_from(["create", "create", "delete", "fail"]), st.sampled_from(NAMES)
)


@settings(
    max_examples=25,
    deadline=None,
    # A race does not replay exactly, so shrinking one mostly chases noise (for minutes).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    limit=st.integers(3, 5),
    thread_count=st.integers(4, 8),
    preload=st.lists(st.sampled_from(NAMES), unique=True, max_size=3),
    ops=st.lists(OPERATION, min_size=8, max_size=40),
)
def test_concurrent_creates_deletes_and_failures_respect_the_quota(
    arena: Arena, limit: int, thread_count: int, preload: list[str], ops: list[tuple[str, str]]
) -> None:
    race = arena.new_race(limit)
    for name in preload:
        race.services.keypairs.create(race.member, name, public_key=PUBLIC_KEYS[name])
    start_event = last_event_id(race)
    tally = Tally()
    injector = FailureInjector(events.record)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(events, "record", injector)
        run_threads(race, [ops[i::thread_count] for i in range(thread_count)], injector, tally)

    assert not tally.errors, f"unexpected errors: {tally.errors!r}"
    live = live_keypairs(race)
    # Never over the limit, neither seen during the race nor at the end.
    assert max(tally.live_seen, default=0) <= limit
    assert all(0 <= u <= limit for u in tally.usage_seen), tally.usage_seen
    assert len(live) <= limit
    # Usage equals the live resources, by the quota API and by the row itself.
    assert (reported_usage(race), usage_row(race)) == (len(live), len(live)), tally.outcomes
    # Every success changed exactly one row; every failure changed nothing.
    assert len(live) == len(preload) + tally.outcomes["created"] - tally.outcomes["deleted"]
    assert set(live) <= set(preload) | tally.created
    assert sum(tally.outcomes.values()) == len(ops)
    assert tally.outcomes["injected"] <= sum(op == "fail" for op, _ in ops)
    # The outbox agrees: an event exactly for each committed change, none for rolled-back ones.
    recorded = events_since(race, start_event)
    assert recorded["keypair.created"] == tally.outcomes["created"]
    assert recorded["keypair.deleted"] == tally.outcomes["deleted"]


def test_twenty_racing_creates_at_limit_five(arena: Arena) -> None:
    race = arena.new_race(5)
    tally = Tally()
    work = [[("create", f"kp-{i}")] for i in range(20)]
    run_threads(race, work, FailureInjector(events.record), tally)

    assert not tally.errors, f"unexpected errors: {tally.errors!r}"
    assert tally.outcomes == Counter({"created": 5, "quota_exceeded": 15})
    assert len(live_keypairs(race)) == 5
    assert reported_usage(race) == 5
    assert max(tally.live_seen) == 5


def test_racing_deletes_of_one_keypair_release_its_quota_once(arena: Arena) -> None:
    race = arena.new_race(3)
    for _ in range(5):
        race.services.keypairs.create(race.member, "key-0", public_key=PUBLIC_KEYS["key-0"])
        tally = Tally()
        run_threads(
            race, [[("delete", "key-0")] for _ in range(6)], FailureInjector(events.record), tally
        )

        assert not tally.errors, f"unexpected errors: {tally.errors!r}"
        assert tally.outcomes == Counter({"deleted": 1, "not_found": 5})
        assert (reported_usage(race), usage_row(race)) == (0, 0)
