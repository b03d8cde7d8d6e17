"""String columns: integer codes per row into a table of distinct values.

Tables only grow (until compacted), so what is computed per distinct value (a wildcard's
matches, an extra spec's verdict) is cached on the table, and a table grown by a refresh
extends its parent's verdicts to the new values instead of starting over: a host joining
does not make the next ``HOSTNAME = "node-*"`` re-match ten thousand names.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

#: cached per-value verdicts kept per string table before the cache starts afresh
_LUT_CACHE_SIZE = 256


class StrTable:
    """The distinct values of a string column. Immutable: new values make a new table."""

    __slots__ = ("_array", "_inherited", "_luts", "lookup", "values")

    def __init__(
        self,
        values: tuple[str, ...],
        lookup: dict[str, int] | None = None,
        inherited: Mapping[Hashable, Array] | None = None,
    ) -> None:
        self.values = values
        self.lookup = {v: code for code, v in enumerate(values)} if lookup is None else lookup
        self._array: Array | None = None
        self._luts: dict[Hashable, Array] = {}
        #: verdicts cached on the table this one grew from, for a prefix of ``values``
        self._inherited = inherited or {}

    def with_values(self, values: Iterable[str]) -> StrTable:
        lookup = self.lookup
        new = list(dict.fromkeys(v for v in values if v not in lookup))
        if not new:
            return self
        lookup = self.lookup.copy()
        lookup.update((v, code) for code, v in enumerate(new, len(self.values)))
        inherited = {**self._inherited, **self._luts}
        if len(inherited) > _LUT_CACHE_SIZE:
            inherited = dict(self._luts)
        return StrTable(self.values + tuple(new), lookup, inherited)

    def array(self) -> Array:
        """The values as a numpy string array, for vectorized string operations."""
        if self._array is None:
            self._array = np.array(self.values if self.values else [""], dtype=np.str_)
        return self._array

    def lut(self, key: Hashable, compute: Callable[[StrTable], Array]) -> Array:
        """``compute(table)`` (a verdict per value) cached under ``key``, with one more False
        at the end so that the missing code -1 indexes it."""
        found = self._luts.get(key)
        if found is not None:
            return found
        earlier = self._inherited.get(key)
        if earlier is not None:  # decided for the values this table grew from: only the rest
            known = len(earlier) - 1
            added = np.asarray(compute(StrTable(self.values[known:])), dtype=bool)
            verdicts = np.concatenate([earlier[:known], added[: len(self.values) - known]])
        else:
            verdicts = np.asarray(compute(self), dtype=bool)[: len(self.values)]
        lut = np.append(verdicts, False)
        if len(self._luts) >= _LUT_CACHE_SIZE:
            self._luts.clear()
        self._luts[key] = lut
        return lut


@dataclass(frozen=True)
class StrColumn:
    codes: Array  # int32 per row, -1 where the host has no value
    table: StrTable

    def matching(self, key: Hashable, compute: Callable[[StrTable], Array]) -> Array:
        return self.table.lut(key, compute)[self.codes]

    def equal_to(self, value: str) -> Array:
        code = self.table.lookup.get(value)
        if code is None:
            return np.zeros(len(self.codes), dtype=bool)
        equal: Array = self.codes == code
        return equal


def encode(values: Sequence[str | None], table: StrTable) -> Array:
    lookup = table.lookup
    return np.fromiter(
        (-1 if v is None else lookup[v] for v in values), dtype=np.int32, count=len(values)
    )


def encode_all(columns: Mapping[str, list[str | None]]) -> dict[str, StrColumn]:
    out = {}
    for key, values in columns.items():
        table = StrTable(tuple(dict.fromkeys(v for v in values if v is not None)))
        out[key] = StrColumn(encode(values, table), table)
    return out


def compacted(column: StrColumn) -> StrColumn:
    """The column with a table of only the values still in use (hosts that left or were
    renamed leave their old values behind)."""
    used = np.unique(column.codes[column.codes >= 0])
    table = StrTable(tuple(column.table.values[code] for code in used))
    remap = np.full(len(column.table.values) + 1, -1, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return StrColumn(remap[column.codes], table)
