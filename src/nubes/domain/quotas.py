"""Quota resource names and their default limits (-1 means unlimited)."""

from __future__ import annotations

#: Resource name -> default limit. ``key_pairs`` is counted per user, the rest per project.
QUOTA_RESOURCES: dict[str, int] = {
    "instances": 10,
    "cores": 20,
    "ram": 51200,
    "volumes": 10,
    "gigabytes": 1000,
    "networks": 10,
    "ports": 50,
    "floating_ips": 10,
    "security_groups": 10,
    "key_pairs": 100,
    "server_groups": 10,
    "server_group_members": 10,
    "subnets": 10,
    "routers": 10,
    "security_group_rules": 100,
}

#: Resources whose usage is counted per user rather than per project.
PER_USER_RESOURCES = frozenset({"key_pairs"})

UNLIMITED = -1
