"""What an expression means on one host: the reference semantics that the vectorized path
(``vectorized``) must agree with, and the way to ask "why does host X not match?".

- A name the host does not report is *missing*: any comparison that reads it is false (so a
  requirement on a metric a host lacks rejects that host, rather than failing the request);
  in a RANK a missing name counts as 0. A string where a number is needed counts as missing.
- Division by zero gives 0 (a missing dividend stays missing).
- Strings compare only with ``=`` and ``!=``; a ``*`` in a string literal is a wildcard for
  any run of characters (``HOSTNAME = "node-*"``), as in OpenNebula. ``!=`` is true only when
  the value is present and differs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from nubes.scheduler.columns import as_number, normalize_arch, normalize_hypervisor
from nubes.scheduler.expr import (
    Arith,
    Compare,
    Expression,
    Logic,
    Name,
    Negate,
    Node,
    Not,
    Number,
    String,
)
from nubes.scheduler.model import HostView

Value = float | str | None  # None: missing


def evaluate(expr: Expression, attributes: Mapping[str, object]) -> bool | float:
    """A requirement's truth or a rank's value on one host with these attributes."""
    if expr.kind == "condition":
        return _truth(expr.root, attributes)
    value = _number(expr.root, attributes, rank=True)
    return 0.0 if value is None else value


def host_attributes(host: HostView) -> dict[str, object]:
    """What an expression can read on ``host``: its metrics, under the built-in attributes
    (which win over a metric of the same name)."""
    return {
        **host.metrics,
        "HOSTNAME": host.name,
        "ZONE": host.zone,
        "ARCH": normalize_arch(host.arch),
        "HYPERVISOR": normalize_hypervisor(host.driver),
        "ACCELERATED": 1.0 if host.accelerated else 0.0,
        "FREE_VCPUS": int(host.vcpus * host.cpu_ratio) - host.allocated_vcpus,
        "FREE_RAM_MB": int(host.ram_mb * host.ram_ratio) - host.allocated_ram_mb,
        "FREE_DISK_GB": int(host.disk_gb * host.disk_ratio) - host.allocated_disk_gb,
        "INSTANCES": host.instances,
    }


def wildcard_match(value: str, pattern: str) -> bool:
    """Whole-string match where each ``*`` stands for any run of characters (even none)."""
    if "*" not in pattern:
        return value == pattern
    first, *middle, last = pattern.split("*")
    if not value.startswith(first) or not value.endswith(last):
        return False
    position = len(first)
    for part in middle:
        found = value.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return len(value) - len(last) >= position


def attribute(attributes: Mapping[str, object], name: str) -> Value:
    raw = attributes.get(name)
    if isinstance(raw, str):
        return raw
    value = as_number(raw)
    return None if value is None or math.isnan(value) else value


def _value(node: Node, attributes: Mapping[str, object], rank: bool) -> Value:
    if isinstance(node, String):
        return node.value
    if isinstance(node, Name):
        return attribute(attributes, node.name)
    return _number(node, attributes, rank)


def _number(node: Node, attributes: Mapping[str, object], rank: bool) -> float | None:
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Name):
        value = attribute(attributes, node.name)
        if isinstance(value, float):
            return value
        return 0.0 if rank else None
    if isinstance(node, Negate):
        operand = _number(node.operand, attributes, rank)
        return None if operand is None else -operand
    if isinstance(node, Arith):
        left = _number(node.left, attributes, rank)
        right = _number(node.right, attributes, rank)
        if left is None or right is None:
            return None
        result = _arith(node.op, left, right)
        return None if math.isnan(result) else result
    raise TypeError(f"not a number: {node!r}")  # the parser never builds this


def _arith(op: str, left: float, right: float) -> float:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return 0.0 if right == 0 else left / right


def _truth(node: Node, attributes: Mapping[str, object]) -> bool:
    if isinstance(node, Logic):
        if node.op == "&":
            return _truth(node.left, attributes) and _truth(node.right, attributes)
        return _truth(node.left, attributes) or _truth(node.right, attributes)
    if isinstance(node, Not):
        return not _truth(node.operand, attributes)
    if isinstance(node, Compare):
        return _compare(node, attributes)
    raise TypeError(f"not a condition: {node!r}")  # the parser never builds this


def _compare(node: Compare, attributes: Mapping[str, object]) -> bool:
    left = _value(node.left, attributes, rank=False)
    right = _value(node.right, attributes, rank=False)
    if left is None or right is None:
        return False
    if isinstance(left, str) and isinstance(right, str):
        if isinstance(node.left, String) and not isinstance(node.right, String):
            left, right = right, left  # the literal is the pattern, whichever side it is on
        literal = isinstance(node.left, String) or isinstance(node.right, String)
        equal = wildcard_match(left, right) if literal else left == right
        return equal if node.op == "=" else not equal if node.op == "!=" else False
    if isinstance(left, float) and isinstance(right, float):
        return _ordered(node.op, left, right)
    return False  # a string against a number: not comparable, as if missing


def _ordered(op: str, left: float, right: float) -> bool:
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if op == ">":
        return left > right
    if op == "<":
        return left < right
    if op == ">=":
        return left >= right
    return left <= right
