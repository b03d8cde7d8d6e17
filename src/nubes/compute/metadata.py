"""What an instance learns about itself, the cloud-init way: the OpenStack metadata layout
(``openstack/<version>/meta_data.json``, ``network_data.json``, ``user_data``,
``vendor_data.json``) and the EC2 one (``ec2/latest/meta-data.json``, and a tree for the
metadata service's ``/latest/meta-data/``).

Pure: built from an :class:`~nubes.store.models.Instance` row and plain NIC data, no database,
no I/O, no randomness (Nova's ``random_seed`` is left out), and every JSON document is written
with sorted keys. So equal inputs give byte-equal files: the agent rebuilds a config drive
only when this content changes, and the config drive and the metadata service (which serves
the same documents) never disagree.

NICs come from the networking service as plain dicts (see :func:`parse_nics` for the shape,
which follows :mod:`nubes.domain.netdesired`); none at all is normal (no network yet).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nubes.domain.errors import InvalidInput
from nubes.domain.netdesired import tap_name
from nubes.network.instance_ports import InstanceNic
from nubes.store.models import Instance

#: Nova writes every version it knows; cloud-init asks for "latest" and falls back to dated
#: ones, so one dated version (the newest whose meta_data.json has what we fill) is enough.
OPENSTACK_VERSIONS = ("2018-08-27", "latest")
EC2_VERSION = "latest"
#: What Nova calls a zone nobody chose; OpenStack clients and guests expect some name.
DEFAULT_AVAILABILITY_ZONE = "nova"
HOSTNAME_MAX = 63
#: Nova's vif type for a tap on a Linux bridge, which is what the agent plugs NICs into.
LINK_TYPE = "bridge"
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class FixedIp:
    address: str
    cidr: str
    gateway_ip: str | None = None
    enable_dhcp: bool = True
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination CIDR, next hop)


@dataclass(frozen=True)
class Nic:
    port_id: str
    mac: str
    network_id: str
    mtu: int = DEFAULT_MTU
    fixed_ips: tuple[FixedIp, ...] = ()


# -- input -------------------------------------------------------------------------------------


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _fixed_ip(data: Any, where: str) -> FixedIp:
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where}: expected an object with ip_address and subnet")
    address = _text(data, "ip_address", where)
    subnet = data.get("subnet")
    if not isinstance(subnet, Mapping):
        raise InvalidInput(f"{where}.subnet: expected an object with the subnet's cidr")
    cidr = _text(subnet, "cidr", f"{where}.subnet")
    gateway = subnet.get("gateway_ip") or None
    try:
        network = ipaddress.ip_network(cidr, strict=False)
        if ipaddress.ip_address(address) not in network:
            raise InvalidInput(f"{where}.ip_address: {address} is not in {cidr}")
        if gateway is not None:
            ipaddress.ip_address(gateway)
        routes = tuple(
            (str(ipaddress.ip_network(dest, strict=False)), str(ipaddress.ip_address(hop)))
            for dest, hop in subnet.get("host_routes") or ()
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{where}: {exc}") from exc
    return FixedIp(
        address=address,
        cidr=str(network),
        gateway_ip=gateway,
        enable_dhcp=bool(subnet.get("enable_dhcp", True)),
        dns_nameservers=tuple(str(s) for s in subnet.get("dns_nameservers") or ()),
        host_routes=routes,
    )


def parse_nics(raw: Sequence[Mapping[str, Any]] | None) -> tuple[Nic, ...]:
    """NICs from plain data, in the order the guest should see them::

        {"port_id": str, "mac": str, "network_id": str, "mtu": int (optional, 1500),
         "fixed_ips": [{"ip_address": str,
                        "subnet": {"cidr": str, "gateway_ip": str | None,
                                   "enable_dhcp": bool, "dns_nameservers": [str],
                                   "host_routes": [[cidr, next hop]]}}]}

    Raises :class:`InvalidInput` naming the field when the data is not of that shape."""
    nics = []
    for index, data in enumerate(raw or ()):
        where = f"nics[{index}]"
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{where}: expected an object, got {data!r}")
        mtu = data.get("mtu") or DEFAULT_MTU
        if not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            raise InvalidInput(f"{where}.mtu: 68 to 65535, not {mtu!r}")
        nics.append(
            Nic(
                port_id=_text(data, "port_id", where),
                mac=_text(data, "mac", where).lower(),
                network_id=_text(data, "network_id", where),
                mtu=mtu,
                fixed_ips=tuple(
                    _fixed_ip(ip, f"{where}.fixed_ips[{n}]")
                    for n, ip in enumerate(data.get("fixed_ips") or ())
                ),
            )
        )
    return tuple(nics)


# -- names -------------------------------------------------------------------------------------


def sanitize_hostname(name: str, default: str) -> str:
    """An RFC 1123 host label from a display name, as Nova makes it: spaces, underscores and
    dots become dashes, everything else outside ``[a-z0-9-]`` goes, lower case, no dash at
    either end, at most 63 characters; ``default`` when nothing is left."""
    label = re.sub(r"[ _.]", "-", name.lower())
    label = re.sub(r"[^a-z0-9-]", "", label)
    label = label[:HOSTNAME_MAX].strip("-")
    return label or default


def hostname_of(row: Instance) -> str:
    return sanitize_hostname(row.name or "", default=f"server-{row.id}"[:HOSTNAME_MAX])


def _zone(row: Instance, availability_zone: str | None) -> str:
    return availability_zone or row.availability_zone or DEFAULT_AVAILABILITY_ZONE


def _keys(row: Instance) -> list[tuple[str, str]]:
    if not row.public_key:
        return []
    return [(row.keypair_name or "key", row.public_key.strip())]


# -- OpenStack ---------------------------------------------------------------------------------


def meta_data(row: Instance, *, availability_zone: str | None = None) -> dict[str, Any]:
    """``openstack/<version>/meta_data.json``."""
    keys = _keys(row)
    return {
        "uuid": row.id,
        "name": row.name,
        "hostname": hostname_of(row),
        "launch_index": 0,
        "availability_zone": _zone(row, availability_zone),
        "project_id": row.project_id,
        "public_keys": dict(keys),
        "keys": [{"name": name, "type": "ssh", "data": key} for name, key in keys],
        "meta": {str(k): str(v) for k, v in (row.instance_metadata or {}).items()},
        "devices": [],
    }


def _route(destination: str, gateway: str) -> dict[str, str]:
    network = ipaddress.ip_network(destination, strict=False)
    return {
        "network": str(network.network_address),
        "netmask": str(network.netmask),
        "gateway": gateway,
    }


def _dns(servers: Sequence[str]) -> list[dict[str, str]]:
    return [{"type": "dns", "address": server} for server in servers]


def _network_entry(nic: Nic, fixed: FixedIp, number: int) -> dict[str, Any]:
    """One ``networks`` item: DHCP when the subnet runs it (the guest asks), else static
    (address, netmask, default route through the gateway, the subnet's routes and DNS)."""
    version = ipaddress.ip_network(fixed.cidr).version
    entry: dict[str, Any] = {
        "id": f"network{number}",
        "link": tap_name(nic.port_id),
        "network_id": nic.network_id,
    }
    if fixed.enable_dhcp:
        return {**entry, "type": f"ipv{version}_dhcp"}
    default = "0.0.0.0/0" if version == 4 else "::/0"
    routes = [_route(default, fixed.gateway_ip)] if fixed.gateway_ip else []
    routes += [_route(dest, hop) for dest, hop in fixed.host_routes]
    return {
        **entry,
        "type": f"ipv{version}",
        "ip_address": fixed.address,
        "netmask": str(ipaddress.ip_network(fixed.cidr).netmask),
        "routes": routes,
        "services": _dns(fixed.dns_nameservers),
    }


def network_data(nics: Sequence[Nic]) -> dict[str, Any]:
    """``openstack/<version>/network_data.json``: ``links`` (one per NIC, named like its tap
    on the host), ``networks`` (one per fixed IP, numbered in order) and ``services`` (every
    subnet's DNS servers, once each)."""
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    servers: list[str] = []
    for nic in nics:
        links.append(
            {
                "id": tap_name(nic.port_id),
                "vif_id": nic.port_id,
                "type": LINK_TYPE,
                "mtu": nic.mtu,
                "ethernet_mac_address": nic.mac,
            }
        )
        for fixed in nic.fixed_ips:
            networks.append(_network_entry(nic, fixed, len(networks)))
            servers += [s for s in fixed.dns_nameservers if s not in servers]
    return {"links": links, "networks": networks, "services": _dns(servers)}


# -- EC2 ---------------------------------------------------------------------------------------


def _first_ipv4(nics: Sequence[Nic]) -> str:
    for nic in nics:
        for fixed in nic.fixed_ips:
            if ipaddress.ip_address(fixed.address).version == 4:
                return fixed.address
    return ""


def ec2_meta_data(
    row: Instance,
    nics: Sequence[Nic] = (),
    *,
    instance_type: str | None = None,
    availability_zone: str | None = None,
) -> dict[str, Any]:
    """The EC2 ``meta-data`` tree as nested dicts (leaves are strings). ``instance-id`` is the
    nubes id itself: one id per instance across every API face."""
    hostname = hostname_of(row)
    tree: dict[str, Any] = {
        "instance-id": row.id,
        "ami-launch-index": "0",
        "instance-type": instance_type or row.flavor_id,
        "hostname": hostname,
        "local-hostname": hostname,
        "local-ipv4": _first_ipv4(nics),
        "placement": {"availability-zone": _zone(row, availability_zone)},
    }
    keys = _keys(row)
    if keys:  # "_name" is how a directory lists this entry, as Nova writes it
        name, key = keys[0]
        tree["public-keys"] = {"0": {"_name": f"0={name}", "openssh-key": key}}
    return tree


def ec2_lookup(tree: Mapping[str, Any], path: str) -> str | None:
    """What the metadata service answers for ``path`` below ``meta-data/``: a leaf's text, or
    a directory's listing, one entry a line (sub-directories end in ``/``, except those with a
    ``_name``: ``public-keys/`` lists ``0=<key name>`` as EC2 does); None when nothing is
    there."""
    node: Any = tree
    for part in [p for p in path.split("/") if p]:
        part = part.split("=", 1)[0]  # "0=mykey" names entry "0"
        if not isinstance(node, Mapping) or part.startswith("_") or part not in node:
            return None
        node = node[part]
    if isinstance(node, str):
        return node
    return "\n".join(_listed(key, node[key]) for key in sorted(node) if not key.startswith("_"))


def _listed(key: str, child: Any) -> str:
    if not isinstance(child, Mapping):
        return key
    return str(child.get("_name") or f"{key}/")


# -- the whole tree ----------------------------------------------------------------------------


def _json(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode()


def config_drive_files(
    row: Instance,
    nics: Sequence[Mapping[str, Any]] | None = None,
    *,
    instance_type: str | None = None,
    availability_zone: str | None = None,
) -> dict[str, bytes]:
    """Every file of the instance's config drive: path (relative, ``/``-separated) → bytes."""
    parsed = parse_nics(nics)
    documents = {
        "meta_data.json": _json(meta_data(row, availability_zone=availability_zone)),
        "network_data.json": _json(network_data(parsed)),
        "vendor_data.json": _json({}),
    }
    if row.user_data is not None:
        documents["user_data"] = row.user_data.encode()
    files = {
        f"openstack/{version}/{name}": content
        for version in OPENSTACK_VERSIONS
        for name, content in documents.items()
    }
    ec2 = ec2_meta_data(
        row, parsed, instance_type=instance_type, availability_zone=availability_zone
    )
    files[f"ec2/{EC2_VERSION}/meta-data.json"] = _json(ec2)
    if row.user_data is not None:
        files[f"ec2/{EC2_VERSION}/user-data"] = row.user_data.encode()
    return files


# -- the metadata service ----------------------------------------------------------------------

#: cloud-init's EC2 datasource asks for 2009-04-04 first; every dated version gets the one tree
EC2_SERVED_VERSIONS = ("2009-04-04", "latest")
_EC2_VERSION = re.compile(r"^(latest|\d{4}-\d{2}-\d{2})$")
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
OPENSTACK_FILES = ("meta_data.json", "network_data.json", "user_data", "vendor_data.json")


def nic_data(nic: InstanceNic) -> dict[str, Any]:
    """A NIC of :func:`nubes.network.instance_ports.instance_nics` in :func:`parse_nics`'s
    shape (the metadata service's NICs then match the config drive's)."""
    subnets = {s.id: s for s in nic.subnets}
    return {
        "port_id": nic.id,
        "mac": nic.mac,
        "network_id": nic.network_id,
        "mtu": nic.mtu,
        "fixed_ips": [
            {
                "ip_address": address,
                "subnet": {
                    "cidr": subnets[subnet_id].cidr,
                    "gateway_ip": subnets[subnet_id].gateway_ip,
                    "enable_dhcp": subnets[subnet_id].enable_dhcp,
                    "dns_nameservers": list(subnets[subnet_id].dns_nameservers),
                    "host_routes": [list(r) for r in subnets[subnet_id].host_routes],
                },
            }
            for subnet_id, address in nic.fixed_ips
            if subnet_id in subnets
        ],
    }


def metadata_answer(
    row: Instance,
    nics: Sequence[Mapping[str, Any]],
    path: str,
    *,
    via_port_id: str = "",
    instance_type: str | None = None,
    availability_zone: str | None = None,
) -> tuple[str, bytes] | None:
    """What the metadata service answers an instance asking for ``path`` (media type, body),
    or None (404). The content is the config drive's; ``local-ipv4`` is the first IPv4 of the
    NIC the question came through (``via_port_id``)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return TEXT, "\n".join(EC2_SERVED_VERSIONS).encode()
    if parts[0] == "openstack":
        return _openstack_answer(row, nics, parts[1:], availability_zone)
    if not _EC2_VERSION.match(parts[0]):
        return None
    if parts[1:] == []:
        listing = ["meta-data/"] + (["user-data"] if row.user_data is not None else [])
        return TEXT, "\n".join(listing).encode()
    if parts[1:] == ["user-data"]:
        return None if row.user_data is None else (TEXT, row.user_data.encode())
    if parts[1] != "meta-data":
        return None
    parsed = parse_nics(nics)
    through = [n for n in parsed if n.port_id == via_port_id] or list(parsed)
    tree = ec2_meta_data(
        row, through, instance_type=instance_type, availability_zone=availability_zone
    )
    found = ec2_lookup(tree, "/".join(parts[2:]))
    return None if found is None else (TEXT, found.encode())


def _openstack_answer(
    row: Instance,
    nics: Sequence[Mapping[str, Any]],
    parts: list[str],
    availability_zone: str | None,
) -> tuple[str, bytes] | None:
    if not parts:
        return TEXT, "\n".join(OPENSTACK_VERSIONS).encode()
    if parts[0] not in OPENSTACK_VERSIONS or len(parts) > 2:
        return None
    files = config_drive_files(row, nics, availability_zone=availability_zone)
    if len(parts) == 1:
        names = [n for n in OPENSTACK_FILES if f"openstack/{parts[0]}/{n}" in files]
        return TEXT, "\n".join(names).encode()
    content = files.get(f"openstack/{parts[0]}/{parts[1]}")
    if content is None:
        return None
    return (JSON if parts[1].endswith(".json") else TEXT), content
