"""The snapshot's column store: one numpy array per host attribute, one row per host, so a
filter is one array comparison over every host.

Rows are slots: a host keeps its row while it lives, a host that leaves frees its row
(``live`` turns false) and the next host to join takes it. A refresh therefore never shifts
rows: it copies the arrays (cheap, in C), writes the rows of the hosts that changed, and does
per-host Python work only for those. Host-name order, which breaks ties between equal
scores, is kept as a rank per row, adjusted in place when hosts join, leave or are renamed.

Strings (names, zone, arch, metric strings, aggregate metadata) are integer codes into a
table of distinct values (``strings``).

A column never changed by a refresh is shared with the previous snapshot, not copied: most
heartbeats change metrics and allocations, not zones or names.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nubes.scheduler.strings import Array, StrColumn, StrTable, compacted, encode, encode_all

if TYPE_CHECKING:
    from nubes.scheduler.model import HostView

KIND_BITS = {"disk": 1, "rootfs": 2}
#: image "architecture" spellings that name the same machine (as Nova normalises them)
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i386": "i686"}
_HYPERVISOR_ALIASES = {"kvm": "qemu"}
#: Attributes every host has, readable from expressions; they win over same-named metrics.
#: HOSTNAME, ZONE; ARCH and HYPERVISOR (the driver) as normalised ("amd64" is "x86_64",
#: "kvm" is "qemu"); ACCELERATED (1 or 0); FREE_VCPUS, FREE_RAM_MB, FREE_DISK_GB (what can
#: still be allocated, ratios applied) and INSTANCES, which follow a batch as it is placed.
STRING_BUILTINS = ("HOSTNAME", "ZONE", "ARCH", "HYPERVISOR")
DYNAMIC_NAMES = frozenset({"FREE_VCPUS", "FREE_RAM_MB", "FREE_DISK_GB", "INSTANCES"})
BUILTIN_NAMES = frozenset({*STRING_BUILTINS, *DYNAMIC_NAMES, "ACCELERATED"})
#: the fixed numeric columns and their types, in the order ``_numbers_row`` yields them
NUMBER_COLUMNS: tuple[tuple[str, type], ...] = (
    ("live", np.bool_),
    ("enabled", np.bool_),
    ("up", np.bool_),
    ("kinds", np.uint8),
    ("free_vcpus", np.int64),
    ("free_ram_mb", np.int64),
    ("free_disk_gb", np.int64),
    ("vcpus", np.int64),
    ("instances", np.int64),
    ("max_instances", np.int64),  # -1: no limit of its own
    ("accelerated", np.bool_),
)
#: rank changes above which ranks are recomputed by sorting rather than shifted one by one
_RERANK_ABOVE = 64


@functools.lru_cache(maxsize=256)
def normalize_arch(arch: str) -> str:
    arch = arch.strip().lower()
    return _ARCH_ALIASES.get(arch, arch)


@functools.lru_cache(maxsize=256)
def normalize_hypervisor(name: str) -> str:
    name = name.strip().lower()
    return _HYPERVISOR_ALIASES.get(name, name)


def as_number(value: object) -> float | None:
    """A metric's value as a number, None when it is not one (strings are kept apart). An
    integer too large for a float counts as missing (NaN) rather than breaking the snapshot."""
    if isinstance(value, int | float):  # bool is an int: true is 1
        try:
            return float(value)
        except OverflowError:
            return math.nan
    return None


@functools.lru_cache(maxsize=64)
def kind_bits(kinds: Iterable[str]) -> int:
    bits = 0
    for kind in kinds:
        bits |= KIND_BITS.get(kind, 0)
    return bits


@dataclass(frozen=True)
class _Block:
    """Column values for a few hosts, before they are written into a table."""

    numbers: dict[str, Array]
    metrics: dict[str, Array]
    strings: dict[str, list[str | None]]
    text_metrics: dict[str, list[str | None]]
    metadata: dict[str, list[str | None]]


def _numbers_row(h: HostView) -> tuple[int, ...]:
    return (
        1,
        h.enabled,
        h.state == "monitored",
        kind_bits(h.image_kinds),
        int(h.vcpus * h.cpu_ratio) - h.allocated_vcpus,
        int(h.ram_mb * h.ram_ratio) - h.allocated_ram_mb,
        int(h.disk_gb * h.disk_ratio) - h.allocated_disk_gb,
        h.vcpus,
        h.instances,
        -1 if h.max_instances is None else h.max_instances,
        h.accelerated,
    )


def _block(hosts: Sequence[HostView]) -> _Block:
    n = len(hosts)
    matrix = np.array([_numbers_row(h) for h in hosts], dtype=np.int64).reshape(
        n, len(NUMBER_COLUMNS)
    )
    numbers: dict[str, Array] = {
        name: matrix[:, i].astype(kind) for i, (name, kind) in enumerate(NUMBER_COLUMNS)
    }
    strings: dict[str, list[str | None]] = {
        "HOSTNAME": [h.name for h in hosts],
        "ZONE": [h.zone for h in hosts],
        "ARCH": [normalize_arch(h.arch) for h in hosts],
        "HYPERVISOR": [normalize_hypervisor(h.driver) for h in hosts],
    }
    text_metrics: dict[str, list[str | None]] = {}
    metadata: dict[str, list[str | None]] = {}
    numeric: dict[str, list[float]] = {}
    for row, host in enumerate(hosts):
        for key, value in host.metrics.items():
            if isinstance(value, str):
                if key not in text_metrics:
                    text_metrics[key] = [None] * n
                text_metrics[key][row] = value
            elif (number := as_number(value)) is not None:
                if key not in numeric:
                    numeric[key] = [math.nan] * n
                numeric[key][row] = number
        for key, text in host.aggregate_metadata.items():
            metadata.setdefault(key, [None] * n)[row] = str(text)
    metrics = {key: np.array(values, dtype=np.float64) for key, values in numeric.items()}
    return _Block(numbers, metrics, strings, text_metrics, metadata)


@dataclass(frozen=True)
class Table:
    hosts: Sequence[HostView | None]  # per row; None in a free row
    name_rank: Array  # int64: the row's place in host-name order; -1 in a free row
    sorted_names: Sequence[str]  # live hosts' names, sorted
    index: Mapping[str, int]  # host id -> row
    free_rows: tuple[int, ...]
    numbers: Mapping[str, Array]
    metrics: Mapping[str, Array]  # float64, NaN where the host does not report it
    strings: Mapping[str, StrColumn]
    text_metrics: Mapping[str, StrColumn]
    metadata: Mapping[str, StrColumn]  # aggregate metadata key -> values

    @property
    def rows(self) -> int:
        """Rows, free ones included: the length of every column."""
        return len(self.name_rank)

    @property
    def count(self) -> int:
        """Hosts (live rows)."""
        return len(self.sorted_names)

    @property
    def live(self) -> Array:
        return self.numbers["live"]

    def host_at(self, row: int) -> HostView:
        found = self.hosts[row]
        if found is None:
            raise LookupError(f"row {row} holds no host")
        return found

    @classmethod
    def build(cls, hosts: Iterable[HostView]) -> Table:
        ordered = sorted({h.id: h for h in hosts}.values(), key=lambda h: h.name)
        block = _block(ordered)
        return cls(
            hosts=ordered,
            name_rank=np.arange(len(ordered), dtype=np.int64),
            sorted_names=[h.name for h in ordered],
            index={h.id: row for row, h in enumerate(ordered)},
            free_rows=(),
            numbers=block.numbers,
            metrics=block.metrics,
            strings=encode_all(block.strings),
            text_metrics=encode_all(block.text_metrics),
            metadata=encode_all(block.metadata),
        )

    def updated(self, changed: Iterable[HostView], removed_ids: Iterable[str]) -> Table:
        edit = _Edit.plan(self, changed, removed_ids)
        if edit is None:
            return self
        grow, rows, size = edit.grow, edit.rows, self.rows
        block = _block(edit.hosts)
        numbers = {
            key: _write(column, grow, rows, block.numbers[key], fill=0)
            for key, column in self.numbers.items()
        }
        if len(edit.leaving):
            live = numbers["live"].copy()
            live[edit.leaving] = False
            numbers["live"] = live
        hosts = [*self.hosts, *[None] * grow]
        for row, host in zip(rows.tolist(), edit.hosts, strict=True):
            hosts[row] = host
        for row in edit.leaving.tolist():
            hosts[row] = None
        name_rank, sorted_names = edit.ranks(self)
        return Table(
            hosts=hosts,
            name_rank=name_rank,
            sorted_names=sorted_names,
            index=edit.index(self),
            free_rows=edit.free_rows,
            numbers=numbers,
            metrics=_write_metrics(self.metrics, size, grow, rows, block.metrics),
            strings=_write_strings(self.strings, size, grow, rows, block.strings),
            text_metrics=_write_strings(self.text_metrics, size, grow, rows, block.text_metrics),
            metadata=_write_strings(self.metadata, size, grow, rows, block.metadata),
        )


@dataclass(frozen=True)
class _Edit:
    """What a refresh does to the rows: write ``hosts`` into ``rows`` (after adding ``grow``
    free rows at the end), free the ``leaving`` rows, and move names in the name order."""

    hosts: list[HostView]
    rows: Array
    leaving: Array
    grow: int
    free_rows: tuple[int, ...]
    #: rows whose name leaves the order, and rows whose (new) name enters it
    unranked: list[int]
    ranked: list[tuple[int, str]]
    joined: dict[str, int]
    left: list[str]

    @classmethod
    def plan(
        cls, table: Table, changed: Iterable[HostView], removed_ids: Iterable[str]
    ) -> _Edit | None:
        gone = set(removed_ids)
        fresh = {h.id: h for h in changed if h.id not in gone}
        removed = [i for i in gone if i in table.index]
        if not fresh and not removed:
            return None
        leaving = [table.index[i] for i in removed]
        free = [*table.free_rows, *leaving]
        writes: list[tuple[int, HostView]] = []
        unranked = list(leaving)
        ranked: list[tuple[int, str]] = []
        joined: dict[str, int] = {}
        grow = 0
        for host in fresh.values():
            row = table.index.get(host.id)
            if row is None:
                if free:
                    row = free.pop()
                else:
                    row, grow = table.rows + grow, grow + 1
                joined[host.id] = row
                ranked.append((row, host.name))
            elif table.host_at(row).name != host.name:
                unranked.append(row)
                ranked.append((row, host.name))
            writes.append((row, host))
        reused = set(joined.values())
        return cls(
            hosts=[h for _, h in writes],
            rows=np.array([row for row, _ in writes], dtype=np.intp),
            leaving=np.array([r for r in leaving if r not in reused], dtype=np.intp),
            grow=grow,
            free_rows=tuple(free),
            unranked=unranked,
            ranked=ranked,
            joined=joined,
            left=list(removed),
        )

    def index(self, table: Table) -> Mapping[str, int]:
        if not self.joined and not self.left:
            return table.index
        index = dict(table.index)
        for host_id in self.left:
            del index[host_id]
        index.update(self.joined)
        return index

    def ranks(self, table: Table) -> tuple[Array, Sequence[str]]:
        if not self.unranked and not self.ranked:
            return table.name_rank, table.sorted_names
        rank = np.concatenate([table.name_rank, np.full(self.grow, -1, dtype=np.int64)])
        if len(self.unranked) + len(self.ranked) > _RERANK_ABOVE:
            return _rerank(table, rank, self)
        names = list(table.sorted_names)
        for row in sorted(self.unranked, key=lambda r: -int(rank[r])):
            place = int(rank[row])
            del names[place]
            rank -= rank > place
            rank[row] = -1
        for row, name in self.ranked:
            place = bisect.bisect_left(names, name)
            names.insert(place, name)
            rank += rank >= place
            rank[row] = place
        return rank, names


def _rerank(table: Table, rank: Array, edit: _Edit) -> tuple[Array, list[str]]:
    """Name order from scratch, for refreshes that move many names at once."""
    named = {row: h.name for row, h in enumerate(table.hosts) if h is not None}
    for row in edit.unranked:
        named.pop(row, None)
    named.update(edit.ranked)
    order = sorted(named, key=lambda row: named[row])
    rank[:] = -1
    rank[order] = np.arange(len(order))
    return rank, [named[row] for row in order]


def _same(current: Array, values: Array) -> bool:
    same = current == values
    if current.dtype.kind == "f":
        same |= np.isnan(current) & np.isnan(values)
    return bool(same.all())


def _write(column: Array, grow: int, rows: Array, values: Array, *, fill: object) -> Array:
    """``column`` grown by ``grow`` rows of ``fill``, with ``values`` written into ``rows``;
    the very same array when that would change nothing (heartbeats rarely change a zone)."""
    if grow:
        filler = np.empty(grow, dtype=column.dtype)
        filler[:] = fill
        column = np.concatenate([column, filler])
    elif _same(column[rows], values):
        return column
    else:
        column = column.copy()
    column[rows] = values
    return column


def _write_metrics(
    metrics: Mapping[str, Array], size: int, grow: int, rows: Array, new: Mapping[str, Array]
) -> dict[str, Array]:
    absent = np.full(len(rows), np.nan)
    return {
        key: _write(
            metrics[key] if key in metrics else np.full(size, np.nan),
            grow,
            rows,
            new.get(key, absent),
            fill=np.nan,
        )
        for key in dict.fromkeys([*metrics, *new])
    }


def _write_strings(
    columns: Mapping[str, StrColumn],
    size: int,
    grow: int,
    rows: Array,
    new: Mapping[str, list[str | None]],
) -> dict[str, StrColumn]:
    out: dict[str, StrColumn] = {}
    absent: list[str | None] = [None] * len(rows)
    for key in dict.fromkeys([*columns, *new]):
        column = columns.get(key)
        values = new.get(key, absent)
        table = StrTable(()) if column is None else column.table
        table = table.with_values(v for v in values if v is not None)
        codes = np.full(size, -1, np.int32) if column is None else column.codes
        written = _write(codes, grow, rows, encode(values, table), fill=-1)
        if column is not None and written is column.codes and table is column.table:
            out[key] = column
            continue
        edited = StrColumn(written, table)
        out[key] = compacted(edited) if len(table.values) > 2 * len(written) + 64 else edited
    return out
