"""Virtual networks: networks, subnets, ports, IPAM, security groups, routers, floating IPs."""
