"""Subnet arithmetic: a CIDR, its gateway, allocation pools, DNS servers and host routes,
checked together into a :class:`SubnetPlan`, with messages that say what is wrong and how to
fix it. Pure: no database, no I/O.

Pools are inclusive ``[start, end]`` ranges of integers, so a /64 costs no more than a /28:
nothing here ever lists the addresses of a pool.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from nubes.domain.errors import InvalidInput

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The smallest subnets (longest prefixes) accepted: a /30 holds two usable addresses.
MAX_PREFIX = {4: 30, 6: 126}
INVALID = "nubes.subnet.invalid"


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code=INVALID)


@dataclass(frozen=True)
class Pool:
    start: int
    end: int
    version: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def __contains__(self, value: int) -> bool:
        return self.start <= value <= self.end

    def render(self) -> list[str]:
        return [str(ip_of(self.start, self.version)), str(ip_of(self.end, self.version))]

    def __str__(self) -> str:
        first, last = self.render()
        return f"{first}-{last}"


@dataclass(frozen=True)
class SubnetPlan:
    cidr: IPNetwork
    gateway: IPAddress | None
    pools: tuple[Pool, ...]
    dns_nameservers: tuple[str, ...]
    host_routes: tuple[tuple[str, str], ...]

    @property
    def version(self) -> int:
        return self.cidr.version


def ip_of(value: int, version: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def parse_ip(value: str, field: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise _invalid(f"{field}: {value!r} is not an IP address") from None


def parse_cidr(value: str, field: str = "cidr") -> IPNetwork:
    """A network address with its prefix; host bits set is refused with the likely intent."""
    if "/" not in value:
        raise _invalid(f"{field}: {value!r} is not a CIDR (ADDRESS/PREFIX, such as 10.0.0.0/24)")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise _invalid(
                f"{field}: {value!r} is not a CIDR (ADDRESS/PREFIX, such as 10.0.0.0/24)"
            ) from None
        raise _invalid(f"{field}: {value} has host bits set; did you mean {loose}?") from None


def first_host(cidr: IPNetwork) -> int:
    return int(cidr.network_address) + 1


def last_host(cidr: IPNetwork) -> int:
    """IPv4 keeps its broadcast address out; IPv6 has none."""
    return int(cidr.broadcast_address) - (1 if cidr.version == 4 else 0)


def check_host_address(cidr: IPNetwork, address: IPAddress, field: str) -> None:
    """``address`` may be given to a host of ``cidr``: inside it, not its network address and
    (IPv4) not its broadcast address."""
    if address.version != cidr.version or address not in cidr:
        raise _invalid(f"{field}: {address} is outside the subnet {cidr}")
    if int(address) == int(cidr.network_address):
        raise _invalid(f"{field}: {address} is the network address of {cidr}")
    if cidr.version == 4 and address == cidr.broadcast_address:
        raise _invalid(f"{field}: {address} is the broadcast address of {cidr}")


def default_pools(cidr: IPNetwork, gateway: IPAddress | None) -> tuple[Pool, ...]:
    """Every host address of ``cidr`` but the gateway."""
    low, high = first_host(cidr), last_host(cidr)
    if gateway is None or not low <= int(gateway) <= high:
        return (Pool(low, high, cidr.version),)
    g = int(gateway)
    parts = [(low, g - 1), (g + 1, high)]
    return tuple(Pool(a, b, cidr.version) for a, b in parts if a <= b)


def _parse_pools(cidr: IPNetwork, pools: Sequence[tuple[str, str]]) -> tuple[Pool, ...]:
    parsed: list[Pool] = []
    for start_text, end_text in pools:
        start = parse_ip(start_text, "allocation_pools")
        end = parse_ip(end_text, "allocation_pools")
        label = f"{start_text}-{end_text}"
        if int(start) > int(end):
            raise _invalid(f"allocation_pools: {label} starts after it ends")
        for address in (start, end):
            check_host_address(cidr, address, f"allocation_pools: pool {label}")
        parsed.append(Pool(int(start), int(end), cidr.version))
    parsed.sort(key=lambda p: p.start)
    for before, after in itertools.pairwise(parsed):
        if after.start <= before.end:
            raise _invalid(f"allocation_pools: pools {before} and {after} overlap")
    return tuple(parsed)


def check_dns(version: int, servers: Sequence[str]) -> tuple[str, ...]:
    result: list[str] = []
    for text in servers:
        address = parse_ip(text, "dns_nameservers")
        if address.version != version:
            raise _invalid(f"dns_nameservers: {text} is not an IPv{version} address")
        if str(address) in result:
            raise _invalid(f"dns_nameservers: {text} is given twice")
        result.append(str(address))
    return tuple(result)


def check_routes(cidr: IPNetwork, routes: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    result: list[tuple[str, str]] = []
    for destination_text, nexthop_text in routes:
        destination = parse_cidr(destination_text, "host_routes: destination")
        nexthop = parse_ip(nexthop_text, "host_routes: nexthop")
        if destination.version != cidr.version or nexthop.version != cidr.version:
            raise _invalid(
                f"host_routes: {destination_text} via {nexthop_text} is not IPv{cidr.version}"
            )
        if nexthop not in cidr:
            raise _invalid(
                f"host_routes: the next hop {nexthop} of {destination} is outside {cidr}"
            )
        result.append((str(destination), str(nexthop)))
    return tuple(result)


class Default:
    """The gateway was not given (as opposed to given as None: no gateway)."""


DEFAULT = Default()


def plan_subnet(
    cidr_text: str,
    *,
    gateway: str | Default | None = DEFAULT,
    pools: Sequence[tuple[str, str]] | None = None,
    dns_nameservers: Sequence[str] = (),
    host_routes: Sequence[tuple[str, str]] = (),
    ip_version: int | None = None,
) -> SubnetPlan:
    """Check everything about a new subnet that does not need the database."""
    cidr = parse_cidr(cidr_text)
    if ip_version is not None and ip_version != cidr.version:
        raise _invalid(f"ip_version is {ip_version} but cidr {cidr} is IPv{cidr.version}")
    if cidr.prefixlen > MAX_PREFIX[cidr.version]:
        raise _invalid(
            f"cidr: {cidr} is too small; IPv{cidr.version} subnets are at most "
            f"/{MAX_PREFIX[cidr.version]}"
        )
    gateway_ip: IPAddress | None
    if isinstance(gateway, Default):
        gateway_ip = ip_of(first_host(cidr), cidr.version)
    elif gateway is None:
        gateway_ip = None
    else:
        gateway_ip = parse_ip(gateway, "gateway_ip")
        check_host_address(cidr, gateway_ip, "gateway_ip")
    parsed_pools = _parse_pools(cidr, pools) if pools else default_pools(cidr, gateway_ip)
    if gateway_ip is not None:
        for pool in parsed_pools:
            if int(gateway_ip) in pool:
                raise _invalid(f"gateway_ip {gateway_ip} is inside allocation pool {pool}")
    return SubnetPlan(
        cidr,
        gateway_ip,
        parsed_pools,
        check_dns(cidr.version, dns_nameservers),
        check_routes(cidr, host_routes),
    )


def pools_of(rendered: Sequence[Sequence[str]], version: int) -> tuple[Pool, ...]:
    """Pools as stored ([start, end] strings) back to integers."""
    return tuple(
        Pool(int(ipaddress.ip_address(a)), int(ipaddress.ip_address(b)), version)
        for a, b in rendered
    )


def free_in_pools(pools: Sequence[Pool], taken: set[int]) -> Iterator[int]:
    """Every pool address not in ``taken``, lowest first, lazily: with U taken addresses the
    first free one is found within U + 1 steps, whatever the pools' size."""
    for pool in pools:
        value = pool.start
        while value <= pool.end:
            if value not in taken:
                yield value
            value += 1


def normalise_ip(value: str) -> str:
    """The one spelling stored, so 10.0.0.010 and 10.0.0.10 are not two addresses."""
    return str(ipaddress.ip_address(value.strip()))
