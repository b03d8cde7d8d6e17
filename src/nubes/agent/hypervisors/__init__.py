"""Hypervisor drivers: one small base class, a registry, a capabilities dataclass, and a
first-class fake whose docstrings define the semantics every real driver follows."""
