"""The scheduler: a pure function from a snapshot of hosts and a request to a plan or an
explanation. No I/O; the compute service builds the snapshot and commits the plan."""

from nubes.scheduler.columns import BUILTIN_NAMES
from nubes.scheduler.core import explain, image_kind, schedule
from nubes.scheduler.expr import ExpressionError, names, parse_rank, parse_requirements
from nubes.scheduler.model import (
    Config,
    HostView,
    NoFit,
    Placement,
    Plan,
    Rejection,
    Request,
    ServerGroupView,
    Snapshot,
)

__all__ = [
    "BUILTIN_NAMES",
    "Config",
    "ExpressionError",
    "HostView",
    "NoFit",
    "Placement",
    "Plan",
    "Rejection",
    "Request",
    "ServerGroupView",
    "Snapshot",
    "explain",
    "image_kind",
    "names",
    "parse_rank",
    "parse_requirements",
    "schedule",
]
