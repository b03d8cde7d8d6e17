"""Networking: networks, subnets, ports with IPAM, security groups, routers and floating IPs
(Neutron's model), and what each host's networking must look like.

What compute calls inside its own transactions is exported here; the services behind the API
live in the submodules (one per resource).
"""

from nubes.network.desired import host_networks, report_ports
from nubes.network.instance_ports import (
    InstanceNic,
    NicRequest,
    allocate_instance_ports,
    bind_instance_ports,
    configure,
    instance_nics,
    release_instance_ports,
)

__all__ = [
    "InstanceNic",
    "NicRequest",
    "allocate_instance_ports",
    "bind_instance_ports",
    "configure",
    "host_networks",
    "instance_nics",
    "release_instance_ports",
    "report_ports",
]
