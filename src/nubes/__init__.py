"""nubes: a private IaaS cloud."""

__version__ = "0.1.0"
