"""IP address management: handing out a subnet's addresses to ports, safely under concurrency.

The guard is the primary key (subnet, address) of ``ip_allocations``; no lock is taken and no
counter is read. To allocate, pick a random address of the pools and INSERT it inside a
SAVEPOINT: if another transaction holds it (committed, or in flight: PostgreSQL makes the second
insert wait for the first to end), the insert fails and only the savepoint rolls back. After
``RANDOM_ATTEMPTS`` misses (the subnet is nearly full) a scan reads the held addresses and tries
the free ones lowest first. Exhaustion is declared when a read shows every pool address held
(full at that instant), or when other transactions took the free ones from under
``SCAN_PASSES`` scans in a row (each address was then held at some moment of the scans).

A released address keeps its row (``port_id`` NULL) until ``cooling_until``: neither random
picks nor the scan hand it out before then, so a stale ARP entry or a half-open connection never
reaches a new owner. An address asked for by value is given even while cooling down: the caller
knows which address they want (typically the one they just released).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.domain.errors import Conflict, InvalidInput
from nubes.network.addresses import Pool, free_in_pools, ip_of, parse_cidr, pools_of
from nubes.store.models import IpAllocation, Subnet, utcnow

#: Random picks before the scan. At 90 % full, 8 misses in a row happen 43 % of the time; at
#: 50 %, 0.4 %: the scan is for nearly full subnets.
RANDOM_ATTEMPTS = 8
#: Scans of a subnet whose free addresses other transactions keep taking, before giving up.
SCAN_PASSES = 3

_rng = random.Random()


def _in_use(subnet: Subnet, address: str, owner: str | None) -> Conflict:
    holder = f"port {owner}" if owner else "a port being created right now"
    return Conflict(
        f"{address} on subnet {subnet.name or subnet.id} is in use by {holder}",
        code="nubes.subnet.address_in_use",
    )


def _try_insert(session: Session, subnet_id: str, address: str, port_id: str) -> bool:
    try:
        with session.begin_nested():
            session.execute(
                insert(IpAllocation).values(
                    subnet_id=subnet_id, ip_address=address, port_id=port_id, cooling_until=None
                )
            )
    except IntegrityError:
        return False
    return True


def _try_reclaim(
    session: Session, subnet_id: str, address: str, port_id: str, *, even_cooling: bool
) -> bool:
    """Take over a released address's row; only once its cool-down is over unless asked for
    by value. The UPDATE re-checks its condition on the newest row, so two reclaims of one row
    cannot both succeed."""
    stmt = update(IpAllocation).where(
        IpAllocation.subnet_id == subnet_id,
        IpAllocation.ip_address == address,
        IpAllocation.port_id.is_(None),
    )
    if not even_cooling:
        stmt = stmt.where(
            or_(IpAllocation.cooling_until.is_(None), IpAllocation.cooling_until <= utcnow())
        )
    result = session.execute(
        stmt.values(port_id=port_id, cooling_until=None).execution_options(
            synchronize_session=False
        )
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _take(
    session: Session, subnet_id: str, address: str, port_id: str, *, even_cooling: bool = False
) -> bool:
    return _try_insert(session, subnet_id, address, port_id) or _try_reclaim(
        session, subnet_id, address, port_id, even_cooling=even_cooling
    )


def check_requested(subnet: Subnet, address: str, *, for_gateway: bool = False) -> str:
    """The normalised address, if a port may ask for it on ``subnet``."""
    where = f"subnet {subnet.name or subnet.id} ({subnet.cidr})"
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        raise InvalidInput(
            f"ip_address: {address!r} is not an IP address", code="nubes.subnet.address_invalid"
        ) from None
    cidr = parse_cidr(subnet.cidr)
    if ip.version != cidr.version or ip not in cidr:
        raise InvalidInput(f"{ip} is not in {where}", code="nubes.subnet.address_invalid")
    if int(ip) == int(cidr.network_address) or (cidr.version == 4 and ip == cidr.broadcast_address):
        raise InvalidInput(
            f"{ip} is the network or broadcast address of {where}",
            code="nubes.subnet.address_invalid",
        )
    if str(ip) == subnet.gateway_ip and not for_gateway:
        raise InvalidInput(
            f"{ip} is the gateway address of {where}; only a router interface takes it",
            code="nubes.subnet.address_invalid",
        )
    return str(ip)


def allocate(
    session: Session,
    subnet: Subnet,
    port_id: str,
    *,
    address: str | None = None,
    for_gateway: bool = False,
) -> str:
    """Give ``port_id`` (already flushed) an address of ``subnet``: ``address`` if given (and
    free), else any free address of the pools."""
    if address is not None:
        wanted = check_requested(subnet, address, for_gateway=for_gateway)
        if _take(session, subnet.id, wanted, port_id, even_cooling=True):
            return wanted
        owner = session.scalar(
            select(IpAllocation.port_id).where(
                IpAllocation.subnet_id == subnet.id, IpAllocation.ip_address == wanted
            )
        )
        raise _in_use(subnet, wanted, owner)
    pools = pools_of(subnet.allocation_pools, subnet.ip_version)
    total = sum(p.size for p in pools)
    if total:
        for _ in range(RANDOM_ATTEMPTS):
            candidate = str(ip_of(_random_in(pools, total), subnet.ip_version))
            if _take(session, subnet.id, candidate, port_id):
                return candidate
    return _scan(session, subnet, pools, total, port_id)


def _random_in(pools: Sequence[Pool], total: int) -> int:
    offset = _rng.randrange(total)
    for pool in pools:
        if offset < pool.size:
            return pool.start + offset
        offset -= pool.size
    raise AssertionError("offset beyond the pools")  # pragma: no cover


def _held(session: Session, subnet: Subnet, pools: Sequence[Pool]) -> tuple[set[int], int]:
    """The addresses no one may be given now (held, or cooling down), and how many of those
    in the pools are cooling, as of one snapshot."""
    rows = session.execute(
        select(IpAllocation.ip_address, IpAllocation.port_id, IpAllocation.cooling_until).where(
            IpAllocation.subnet_id == subnet.id
        )
    ).all()
    now = utcnow()
    blocked: set[int] = set()
    cooling = 0
    for address, owner, until in rows:
        value = int(ipaddress.ip_address(address))
        if owner is None and (until is None or until <= now):
            continue
        blocked.add(value)
        if owner is None and any(value in pool for pool in pools):
            cooling += 1
    return blocked, cooling


def _scan(session: Session, subnet: Subnet, pools: Sequence[Pool], total: int, port_id: str) -> str:
    """Try every pool address a snapshot shows free. Exhaustion is declared from a snapshot
    showing every pool address held: full at that instant. When other transactions take the
    free ones from under the scan, it looks again, ``SCAN_PASSES`` times in all; after that,
    every address was held at some moment of the scan, which is reported as exhaustion too."""
    cooling = 0
    for _ in range(SCAN_PASSES):
        blocked, cooling = _held(session, subnet, pools)
        tried = False
        for value in free_in_pools(pools, blocked):
            tried = True
            candidate = str(ip_of(value, subnet.ip_version))
            if _take(session, subnet.id, candidate, port_id):
                return candidate
        if not tried:
            break  # the snapshot shows every pool address held
    also = f", {cooling} of them cooling down after release" if cooling else ""
    raise Conflict(
        f"subnet {subnet.name or subnet.id} has no free addresses ({total} of {total} in use"
        f"{also})",
        code="nubes.subnet.exhausted",
    )


def release_port(session: Session, port_id: str, cooldown_seconds: int) -> None:
    """Every address of the port goes into its cool-down (or straight back without one)."""
    release(session, [IpAllocation.port_id == port_id], cooldown_seconds)


def release_on_subnet(
    session: Session, port_id: str, subnet_id: str, cooldown_seconds: int
) -> None:
    release(
        session,
        [IpAllocation.port_id == port_id, IpAllocation.subnet_id == subnet_id],
        cooldown_seconds,
    )


def release(session: Session, where: Sequence[ColumnElement[bool]], cooldown_seconds: int) -> None:
    if cooldown_seconds <= 0:
        session.execute(
            delete(IpAllocation).where(*where).execution_options(synchronize_session=False)
        )
        return
    session.execute(
        update(IpAllocation)
        .where(*where)
        .values(port_id=None, cooling_until=utcnow() + timedelta(seconds=cooldown_seconds))
        .execution_options(synchronize_session=False)
    )


def addresses_of(session: Session, port_ids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """Port id → its (subnet id, address) pairs, in one query."""
    ids = list(port_ids)
    result: dict[str, list[tuple[str, str]]] = {pid: [] for pid in ids}
    if not ids:
        return result
    rows = session.execute(
        select(IpAllocation.port_id, IpAllocation.subnet_id, IpAllocation.ip_address)
        .where(IpAllocation.port_id.in_(ids))
        .order_by(IpAllocation.subnet_id, IpAllocation.ip_address)
    ).all()
    for port_id, subnet_id, address in rows:
        result[str(port_id)].append((subnet_id, address))
    return result


def forget_cooling(session: Session, subnet_ids: Sequence[str]) -> None:
    """Drop the released addresses of subnets about to be deleted."""
    session.execute(
        delete(IpAllocation)
        .where(IpAllocation.subnet_id.in_(list(subnet_ids)), IpAllocation.port_id.is_(None))
        .execution_options(synchronize_session=False)
    )
