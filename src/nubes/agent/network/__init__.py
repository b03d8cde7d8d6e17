"""The networking data plane of a compute host (what replaces Neutron's L2, DHCP and security
group agents): Linux bridges joined by VXLAN, a VLAN or a flat uplink, a trusted dnsmasq per
network in a namespace of its own, security groups and anti-spoofing in nftables, and the taps
instances plug into. :class:`NetworkAgent` converges the host to a
:class:`nubes.domain.netdesired.HostNetworks`; see docs/dataplane.md.

Must never import the hypervisor drivers (nor they this package: both meet in the
reconciler), the store, the API or any service.
"""

from nubes.agent.network.agent import NetworkAgent, NicLike, Options, Report
from nubes.agent.network.runner import NetworkError

__all__ = ["NetworkAgent", "NetworkError", "NicLike", "Options", "Report"]
