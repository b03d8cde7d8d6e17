"""Security-group rules checked and put in one canonical form, so that two spellings of the same
rule (``tcp`` and ``6``, a port range of one given as min only) are recognised as duplicates.
Pure: no database."""

from __future__ import annotations

from dataclasses import dataclass

from nubes.domain.errors import InvalidInput
from nubes.network.addresses import parse_cidr

#: Protocol names and their IANA numbers; numbers of these are stored as the name.
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
WITH_PORTS = frozenset({"tcp", "udp"})
ANY = frozenset({"", "any", "all"})
INVALID = "nubes.security_group_rule.invalid"


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code=INVALID)


@dataclass(frozen=True)
class RuleSpec:
    direction: str
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None

    def key(self) -> tuple[object, ...]:
        return (
            self.direction,
            self.ethertype,
            self.protocol,
            self.port_range_min,
            self.port_range_max,
            self.remote_ip_prefix,
            self.remote_group_id,
        )


def normalise_protocol(value: str | int | None) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ANY:
        return None
    if text.isdigit():
        number = int(text)
        if not 0 <= number <= 255:
            raise _invalid(f"protocol: {value} is not an IP protocol number (0-255)")
        names = {v: k for k, v in PROTOCOLS.items()}
        return names.get(number, str(number))
    if text in ("ipv6-icmp", "icmp6"):
        return "icmpv6"
    if text not in PROTOCOLS:
        raise _invalid(f"protocol: {value!r} is not tcp, udp, icmp, icmpv6, any or a number 0-255")
    return text


def _ports(protocol: str | None, low: int | None, high: int | None) -> tuple[int | None, ...]:
    if low is None and high is None:
        return (None, None)
    if protocol not in WITH_PORTS:
        raise _invalid(
            f"port_range_min/port_range_max: ports apply to tcp and udp only, not to "
            f"{protocol or 'any protocol'}"
        )
    low = low if low is not None else high
    high = high if high is not None else low
    assert low is not None
    assert high is not None
    for name, port in (("port_range_min", low), ("port_range_max", high)):
        if not 1 <= port <= 65535:
            raise _invalid(f"{name}: {port} is not a port (1-65535)")
    if low > high:
        raise _invalid(f"port_range_min {low} is above port_range_max {high}")
    return (low, high)


def make_rule(
    *,
    direction: str,
    ethertype: str = "IPv4",
    protocol: str | int | None = None,
    port_range_min: int | None = None,
    port_range_max: int | None = None,
    remote_ip_prefix: str | None = None,
    remote_group_id: str | None = None,
) -> RuleSpec:
    if direction not in ("ingress", "egress"):
        raise _invalid(f"direction: {direction!r} is not ingress or egress")
    if ethertype not in ("IPv4", "IPv6"):
        raise _invalid(f"ethertype: {ethertype!r} is not IPv4 or IPv6")
    proto = normalise_protocol(protocol)
    if proto == "icmpv6" and ethertype == "IPv4":
        raise _invalid("protocol: icmpv6 needs ethertype IPv6")
    low, high = _ports(proto, port_range_min, port_range_max)
    if remote_ip_prefix is not None and remote_group_id is not None:
        raise _invalid("remote_ip_prefix and remote_group_id: give one or the other, not both")
    prefix = None
    if remote_ip_prefix is not None:
        text = remote_ip_prefix.strip()
        if "/" not in text:
            text = f"{text}/{128 if ':' in text else 32}"
        try:
            network = parse_cidr(text, "remote_ip_prefix")
        except InvalidInput as exc:
            raise _invalid(str(exc)) from None
        if f"IPv{network.version}" != ethertype:
            raise _invalid(
                f"remote_ip_prefix: {network} is IPv{network.version} but ethertype is {ethertype}"
            )
        prefix = str(network)
    return RuleSpec(direction, ethertype, proto, low, high, prefix, remote_group_id)
