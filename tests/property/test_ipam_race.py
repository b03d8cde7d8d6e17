"""IPAM under concurrency: threads create and delete ports on one small subnet at random.

Whatever the interleaving: an address is never handed to a port while another live port holds
it; a released address is not handed out again during its cool-down; exhaustion is reported
only when every pool address is held or cooling (and the report says so); and at the end the
records, the quota and what the threads saw agree. On SQLite the writers queue behind
``BEGIN IMMEDIATE``; on PostgreSQL (NUBES_TEST_DATABASE_URL) they really race on the
(subnet, address) key and the fallback scan.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from nubes.api.services import Services
from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict
from nubes.store.models import IpAllocation, Port, QuotaUsage
from tests.conftest import Cloud

TIMEOUT = 60.0
LONG = 3600


@dataclass(frozen=True)
class Lab:
    """Per example: a shared network with a subnet of ``size`` addresses, and one project (with
    its member) per thread, so the threads queue on no quota row of their own and meet only on
    the (subnet, address) key."""

    services: Services
    members: list[RequestContext]
    project_ids: list[str]
    network_id: str
    subnet_id: str
    pool: frozenset[str]


class Arena:
    def __init__(self, services: Services, admin_password: str) -> None:
        self.services = services
        self.admin = services.auth.authenticate_password("admin", admin_password).context
        self.count = itertools.count()
        services.quotas.update(self.admin, "admin", {"networks": -1, "subnets": -1})

    def _member(self, name: str, network_id: str) -> tuple[RequestContext, str]:
        services = self.services
        project = services.projects.create(self.admin, name)
        services.users.create(self.admin, name, "ipam-password", project=project.id)
        services.quotas.update(self.admin, project.id, {"ports": -1})
        member = services.auth.authenticate_password(name, "ipam-password").context
        # the default group is made on first need: make it now, outside the race
        first = services.ports.create(member, network_id, fixed_ips=[])
        services.ports.delete(member, first.port.id)
        return member, project.id

    def new_lab(self, size: int, cooldown: int, racers: int) -> Lab:
        n = next(self.count)
        services = self.services
        services.settings.ip_cooldown_seconds = cooldown
        net = services.networks.create(self.admin, f"net-{n}", shared=True).network
        last = 10 + size - 1
        sub = services.subnets.create(
            self.admin,
            f"sub-{n}",
            network=net.id,
            cidr="10.0.0.0/28" if last < 15 else "10.0.0.0/27",
            allocation_pools=[("10.0.0.10", f"10.0.0.{last}")],
        )
        made = [self._member(f"ipam-{n}-{i}", net.id) for i in range(racers)]
        pool = frozenset(f"10.0.0.{i}" for i in range(10, last + 1))
        return Lab(services, [m for m, _ in made], [p for _, p in made], net.id, sub.id, pool)


@pytest.fixture
def arena(cloud: Cloud) -> Arena:
    return Arena(cloud.services, cloud.admin_password)


@dataclass
class Ledger:
    """What the threads saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    live: dict[str, str] = field(default_factory=dict)  # address → port id
    released: set[str] = field(default_factory=set)
    handed: list[str] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def create(
    lab: Lab, me: RequestContext, ledger: Ledger, mine: list[tuple[str, str]], cooldown: int
) -> None:
    try:
        info = lab.services.ports.create(me, lab.network_id)
    except Conflict as exc:
        if exc.error_code != "nubes.subnet.exhausted":
            raise
        with ledger.lock:
            ledger.exhausted.append(exc.message)
            ledger.outcomes["exhausted"] += 1
        return
    [(_, address)] = info.fixed_ips
    with ledger.lock:
        ledger.outcomes["created"] += 1
        ledger.handed.append(address)
        if address in ledger.live:
            ledger.violations.append(f"{address} handed out while {ledger.live[address]} holds it")
        if cooldown and address in ledger.released:
            ledger.violations.append(f"{address} handed out again during its cool-down")
        if address not in lab.pool:
            ledger.violations.append(f"{address} is outside the pool")
        ledger.live[address] = info.port.id
    mine.append((info.port.id, address))


def delete(lab: Lab, me: RequestContext, ledger: Ledger, mine: list[tuple[str, str]]) -> None:
    if not mine:
        return
    port_id, address = mine.pop(0)
    with ledger.lock:
        # Off the live set before the delete starts: from its commit on, another port may
        # (without a cool-down) legitimately get the address.
        del ledger.live[address]
    lab.services.ports.delete(me, port_id)
    with ledger.lock:
        ledger.released.add(address)
        ledger.outcomes["deleted"] += 1


def run_threads(lab: Lab, work: list[list[str]], ledger: Ledger, cooldown: int) -> None:
    barrier = threading.Barrier(len(work))

    def worker(me: RequestContext, ops: list[str]) -> None:
        mine: list[tuple[str, str]] = []
        try:
            barrier.wait(TIMEOUT)
            for op in ops:
                if op == "create":
                    create(lab, me, ledger, mine, cooldown)
                else:
                    delete(lab, me, ledger, mine)
        except BaseException as exc:
            with ledger.lock:
                ledger.errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(lab.members[i], ops), name=f"ipam-{i}")
        for i, ops in enumerate(work)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread hung"


def rows(lab: Lab) -> tuple[dict[str, str], set[str]]:
    """(address → port) of live allocations, and the cooling addresses, from the database."""
    with lab.services.db.read() as session:
        found = session.execute(
            select(IpAllocation.ip_address, IpAllocation.port_id).where(
                IpAllocation.subnet_id == lab.subnet_id
            )
        ).all()
    live = {a: p for a, p in found if p is not None}
    return live, {a for a, p in found if p is None}


EXHAUSTED = re.compile(r"has no free addresses \((\d+) of (\d+) in use")


@settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    size=st.integers(3, 8),
    cooldown=st.sampled_from([0, LONG]),
    thread_count=st.integers(2, 6),
    ops=st.lists(st.sampled_from(["create", "create", "delete"]), min_size=6, max_size=30),
)
def test_concurrent_creates_and_deletes_never_share_an_address(
    arena: Arena, size: int, cooldown: int, thread_count: int, ops: list[str]
) -> None:
    lab = arena.new_lab(size, cooldown, thread_count)
    ledger = Ledger()
    run_threads(lab, [ops[i::thread_count] for i in range(thread_count)], ledger, cooldown)

    assert not ledger.errors, f"unexpected errors: {ledger.errors!r}"
    assert not ledger.violations, ledger.violations
    for message in ledger.exhausted:
        match = EXHAUSTED.search(message)
        assert match, message
        assert match.group(1) == match.group(2) == str(size), message
    live, cooling = rows(lab)
    # the threads' view and the records agree, address by address
    assert live == ledger.live
    assert set(live) <= lab.pool
    if cooldown:
        assert cooling == ledger.released
        # exhaustion only when full: with a cool-down no address ever came back, so the subnet
        # was full exactly when creates had taken every address once
        assert ledger.outcomes["created"] <= size
        if ledger.outcomes["exhausted"]:
            assert ledger.outcomes["created"] == size
    with lab.services.db.read() as session:
        ports = session.scalar(
            select(func.count()).select_from(Port).where(Port.network_id == lab.network_id)
        )
        usage = session.scalar(
            select(func.sum(QuotaUsage.in_use)).where(
                QuotaUsage.project_id.in_(lab.project_ids), QuotaUsage.resource == "ports"
            )
        )
    assert ports == len(ledger.live) == usage
    # and now, alone: exactly the free addresses are handed out, then exhaustion
    free = lab.pool - set(live) - (cooling if cooldown else set())
    got = set()
    for _ in free:
        [(_, address)] = lab.services.ports.create(lab.members[0], lab.network_id).fixed_ips
        got.add(address)
    assert got == free
    with pytest.raises(Conflict, match=f"\\({size} of {size} in use"):
        lab.services.ports.create(lab.members[0], lab.network_id)


def test_fifty_racing_creates_on_a_slash_28(arena: Arena) -> None:
    """More creates than addresses at once: 13 succeed with 13 distinct addresses."""
    lab = arena.new_lab(13, LONG, 10)
    ledger = Ledger()
    run_threads(lab, [["create"] * 5 for _ in range(10)], ledger, LONG)
    assert not ledger.errors, ledger.errors
    assert not ledger.violations, ledger.violations
    assert ledger.outcomes == Counter({"created": 13, "exhausted": 37})
    assert sorted(ledger.handed, key=ipaddress.ip_address) == sorted(
        lab.pool, key=ipaddress.ip_address
    )
