"""An expression evaluated on every host at once, as numpy arrays; the meaning is the one
``evaluate`` gives for a single host (tests hold the two together).

Numbers are float64 arrays with NaN for "missing"; a comparison is true only where both sides
are present. String comparisons are decided once per distinct value of the column and then
looked up by code, so ``HOSTNAME = "node-*"`` costs one vectorized pass over the names, cached
until a new name appears.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from nubes.scheduler.evaluate import wildcard_match
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
from nubes.scheduler.strings import Array, StrColumn, StrTable

Numeric = Array | float


class Attributes(Protocol):
    """Per-host values by name, as columns of ``size`` rows."""

    @property
    def size(self) -> int: ...

    def numbers(self, name: str) -> Array | None:
        """float64, NaN where missing; None when no host has a number under this name."""

    def strings(self, name: str) -> StrColumn | None: ...


def requirement_mask(expr: Expression, attributes: Attributes) -> Array:
    with np.errstate(all="ignore"):
        return _truth(expr.root, attributes)


def rank_values(expr: Expression, attributes: Attributes) -> Array:
    with np.errstate(all="ignore"):
        values = np.broadcast_to(_number(expr.root, attributes, rank=True), attributes.size)
        return np.where(np.isnan(values), 0.0, values)


def _number(node: Node, attributes: Attributes, rank: bool) -> Numeric:
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Name):
        column = attributes.numbers(node.name)
        if column is None:
            return 0.0 if rank else np.nan
        return np.where(np.isnan(column), 0.0, column) if rank else column
    if isinstance(node, Negate):
        return -_number(node.operand, attributes, rank)  # type: ignore[no-any-return]
    if isinstance(node, Arith):
        left = _number(node.left, attributes, rank)
        right = _number(node.right, attributes, rank)
        if node.op == "+":
            return left + right  # type: ignore[no-any-return]
        if node.op == "-":
            return left - right  # type: ignore[no-any-return]
        if node.op == "*":
            return left * right  # type: ignore[no-any-return]
        zero = np.where(np.isnan(left), np.nan, 0.0)  # a missing dividend stays missing
        return np.where(np.equal(right, 0), zero, np.divide(left, right))
    raise TypeError(f"not a number: {node!r}")  # the parser never builds this


def _truth(node: Node, attributes: Attributes) -> Array:
    if isinstance(node, Logic):
        left = _truth(node.left, attributes)
        right = _truth(node.right, attributes)
        return left & right if node.op == "&" else left | right
    if isinstance(node, Not):
        return ~_truth(node.operand, attributes)
    if isinstance(node, Compare):
        return np.broadcast_to(_compare(node, attributes), attributes.size)
    raise TypeError(f"not a condition: {node!r}")  # the parser never builds this


def _compare(node: Compare, attributes: Attributes) -> Array | bool:
    left, right = node.left, node.right
    if isinstance(left, String) and isinstance(right, String):
        equal = wildcard_match(left.value, right.value)
        return equal if node.op == "=" else not equal
    # the parser lets a string literal meet only a name (or another literal)
    if isinstance(left, String):
        column = attributes.strings(right.name) if isinstance(right, Name) else None
        return _match_literal(column, left.value, node.op, attributes)
    if isinstance(right, String):
        column = attributes.strings(left.name) if isinstance(left, Name) else None
        return _match_literal(column, right.value, node.op, attributes)
    if isinstance(left, Name) and isinstance(right, Name) and node.op in ("=", "!="):
        as_text = _equal_strings(
            attributes.strings(left.name), attributes.strings(right.name), node.op
        )
        return _numeric(node.op, left, right, attributes) | as_text
    return _numeric(node.op, left, right, attributes)


def _numeric(op: str, left_node: Node, right_node: Node, attributes: Attributes) -> Array:
    left = np.asarray(_number(left_node, attributes, rank=False))
    right = np.asarray(_number(right_node, attributes, rank=False))
    present = ~np.isnan(left) & ~np.isnan(right)
    if op == "=":
        verdict = left == right
    elif op == "!=":
        verdict = left != right
    elif op == ">":
        verdict = left > right
    elif op == "<":
        verdict = left < right
    elif op == ">=":
        verdict = left >= right
    else:
        verdict = left <= right
    return np.broadcast_to(verdict & present, attributes.size)


def _match_literal(
    column: StrColumn | None, pattern: str, op: str, attributes: Attributes
) -> Array:
    if column is None:
        return np.zeros(attributes.size, dtype=bool)
    if "*" in pattern:
        equal = column.matching(("glob", pattern), lambda table: glob_verdicts(table, pattern))
    else:
        equal = column.equal_to(pattern)
    return equal if op == "=" else (column.codes >= 0) & ~equal


def _equal_strings(left: StrColumn | None, right: StrColumn | None, op: str) -> Array | bool:
    if left is None or right is None:
        return False
    # right's codes translated to left's (-2: a value left never has; last slot: missing)
    remap = np.array(
        [left.table.lookup.get(v, -2) for v in right.table.values] + [-3], dtype=np.int32
    )
    translated = remap[right.codes]
    present = (left.codes >= 0) & (right.codes >= 0)
    same = left.codes == translated
    verdict: Array = present & (same if op == "=" else ~same)
    return verdict


def glob_verdicts(table: StrTable, pattern: str) -> Array:
    """For each value in the table, whether it matches a ``*`` wildcard pattern (the
    vectorized twin of ``evaluate.wildcard_match``)."""
    values = table.array()
    first, *middle, last = pattern.split("*")
    verdict = np.strings.startswith(values, first) & np.strings.endswith(values, last)
    position = np.full(len(values), len(first))
    for part in middle:
        if not part:
            continue
        found = np.strings.find(values, part, position)
        verdict &= found >= 0
        position = np.where(found >= 0, found + len(part), position)
    verdict &= np.strings.str_len(values) - len(last) >= position
    return verdict  # type: ignore[no-any-return]
