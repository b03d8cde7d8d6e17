"""State-transition tables of every stateful entity (instance, image, volume, port, host).

Pure data and pure functions, no I/O. A service that changes a resource's state calls
:meth:`StateMachine.check` first, in the same transaction as the write, so an illegal
transition is a typed :class:`~nubes.domain.errors.InvalidTransition` (409), never a silent
write. The tables are rendered into ``docs/states.md`` by ``python -m nubes.domain.states``;
a unit test keeps that file equal to :func:`render_docs`.

Self-transitions (``running`` -> ``running``) are never listed: a write that does not change the
state is not a transition, and callers should not ask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nubes.domain.errors import InvalidTransition

__all__ = [
    "ALL_MACHINES",
    "HOST",
    "IMAGE",
    "INSTANCE",
    "PORT",
    "VOLUME",
    "StateMachine",
    "render_docs",
]

_INVALID_TRANSITION = "nubes.state.invalid_transition"


@dataclass(frozen=True)
class StateMachine:
    """The legal state transitions of one kind of entity.

    ``states`` fixes the order used in messages and docs; ``transitions`` holds the legal
    ``(src, dst)`` pairs; ``terminal`` states have no way out. The constructor checks the table
    is coherent (known states, no self-loops, no exit from a terminal state, every state
    reachable from ``initial``) and raises :class:`ValueError` otherwise: a bad table is a bug.
    """

    entity: str
    description: str
    initial: str
    states: tuple[str, ...]
    transitions: frozenset[tuple[str, str]]
    terminal: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        known = set(self.states)
        problems: list[str] = []
        if len(known) != len(self.states):
            problems.append("duplicate states")
        if self.initial not in known:
            problems.append(f"initial state {self.initial!r} is not a state")
        for state in sorted(self.terminal - known):
            problems.append(f"terminal state {state!r} is not a state")
        for src, dst in sorted(self.transitions):
            if src not in known or dst not in known:
                problems.append(f"transition {src!r} -> {dst!r} uses an unknown state")
            if src == dst:
                problems.append(f"self-transition on {src!r}")
            if src in self.terminal:
                problems.append(f"terminal state {src!r} has a way out (to {dst!r})")
        for state in self.states:
            if state not in self.terminal and not self.allowed_from(state):
                problems.append(f"non-terminal state {state!r} has no way out")
        unreachable = known - self._reachable()
        if unreachable:
            problems.append(f"unreachable from {self.initial!r}: {sorted(unreachable)}")
        ids = [_mermaid_id(state) for state in self.states]
        if len(set(ids)) != len(ids):
            problems.append("two states map to the same diagram id")
        if problems:
            raise ValueError(f"bad {self.entity} state machine: " + "; ".join(problems))

    @classmethod
    def build(
        cls,
        entity: str,
        description: str,
        initial: str,
        edges: Mapping[str, Iterable[str]],
        *,
        terminal: Iterable[str] = (),
    ) -> StateMachine:
        """Make a machine from ``{src: [dst, ...]}``.

        States are ordered: ``initial``, then the sources in ``edges`` order, then any state
        only ever a destination, then the terminal states.
        """
        order: dict[str, None] = dict.fromkeys([initial, *edges])
        pairs: set[tuple[str, str]] = set()
        for src, dsts in edges.items():
            for dst in dsts:
                pairs.add((src, dst))
        terminal = frozenset(terminal)
        for _, dst in sorted(pairs):
            if dst not in terminal:
                order.setdefault(dst, None)
        for state in sorted(terminal):
            order.setdefault(state, None)
        return cls(
            entity=entity,
            description=description,
            initial=initial,
            states=tuple(order),
            transitions=frozenset(pairs),
            terminal=terminal,
        )

    def _reachable(self) -> set[str]:
        seen = {self.initial}
        todo = [self.initial]
        while todo:
            src = todo.pop()
            for a, b in self.transitions:
                if a == src and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    def _known(self, state: str) -> None:
        if state not in self.states:
            raise ValueError(
                f"unknown {self.entity} state {state!r}; expected one of {', '.join(self.states)}"
            )

    def is_terminal(self, state: str) -> bool:
        """Whether ``state`` has no way out. Raises ValueError for an unknown state."""
        self._known(state)
        return state in self.terminal

    def allowed_from(self, state: str) -> tuple[str, ...]:
        """The states reachable from ``state`` in one step, in the machine's state order."""
        return tuple(dst for dst in self.states if (state, dst) in self.transitions)

    def can(self, src: str, dst: str) -> bool:
        """Whether ``src -> dst`` is legal. Raises ValueError if either is not a state at all."""
        self._known(src)
        self._known(dst)
        return (src, dst) in self.transitions

    def check(self, src: str, dst: str) -> None:
        """Return if ``src -> dst`` is legal, else raise :class:`InvalidTransition`.

        Unknown state names are a programming error and raise :class:`ValueError` instead.
        """
        if self.can(src, dst):
            return
        allowed = ", ".join(f"{s!r}" for s in self.allowed_from(src)) or "none"
        raise InvalidTransition(
            f"{self.entity} cannot go from {src!r} to {dst!r} (allowed from {src!r}: {allowed})",
            code=_INVALID_TRANSITION,
        )

    def to_markdown(self) -> str:
        """This machine as a markdown section: description, table, mermaid diagram."""
        terminal = ", ".join(f"`{s}`" for s in self.states if s in self.terminal) or "none"
        lines = [
            f"## {self.entity}",
            "",
            self.description,
            "",
            f"Initial state: `{self.initial}`. Terminal states: {terminal}.",
            "",
            "| from | allowed next states |",
            "|---|---|",
        ]
        for state in self.states:
            nexts = ", ".join(f"`{s}`" for s in self.allowed_from(state))
            lines.append(f"| `{state}` | {nexts or '— (terminal)'} |")
        lines += ["", "```mermaid", "stateDiagram-v2"]
        for state in self.states:
            if _mermaid_id(state) != state:
                lines.append(f'    state "{state}" as {_mermaid_id(state)}')
        lines.append(f"    [*] --> {_mermaid_id(self.initial)}")
        for src in self.states:
            for dst in self.allowed_from(src):
                lines.append(f"    {_mermaid_id(src)} --> {_mermaid_id(dst)}")
        for state in self.states:
            if state in self.terminal:
                lines.append(f"    {_mermaid_id(state)} --> [*]")
        lines += ["```", ""]
        return "\n".join(lines)


def _mermaid_id(state: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", state)


def _to(*states: str) -> tuple[str, ...]:
    return states


# Each table below lists every row explicitly (no generated edges) so that it reads like the
# rendered docs. The unit tests check the cross-cutting rules (e.g. every live instance state can
# go to `error` and `deleting`).

#: A virtual machine or system container of a tenant.
INSTANCE = StateMachine.build(
    "instance",
    "A tenant's virtual machine (QEMU/KVM) or system container (LXC). "
    "`error` is reachable from every other state but `deleted` and carries a reason; from `error` "
    "the instance is deleted, or retried from `pending` (rebuild).",
    "pending",
    {
        "pending": _to("scheduled", "deleting", "error"),
        "scheduled": _to("building", "deleting", "error"),
        "building": _to("booting", "deleting", "error"),
        "booting": _to("running", "deleting", "error"),
        "running": _to("stopping", "rebooting", "migrating", "deleting", "error"),
        "stopping": _to("stopped", "deleting", "error"),
        "stopped": _to("booting", "deleting", "error"),
        "rebooting": _to("running", "deleting", "error"),
        "migrating": _to("running", "deleting", "error"),
        "error": _to("pending", "deleting"),
        "deleting": _to("deleted", "error"),
    },
    terminal=("deleted",),
)

#: A registered disk or rootfs image (Glance semantics).
IMAGE = StateMachine.build(
    "image",
    "A registered image, with Glance semantics: created `queued` (no data yet), data "
    "arrives by upload (`saving`) or import (`importing`); an aborted upload goes back to "
    "`queued`, a failed one to `killed`. `active` images can be deactivated (not "
    "downloadable, not bootable) and reactivated. Any image can be deleted.",
    "queued",
    {
        "queued": _to("saving", "importing", "killed", "deleted"),
        "saving": _to("queued", "active", "killed", "deleted"),
        "importing": _to("active", "killed", "deleted"),
        "active": _to("deactivated", "deleted"),
        "deactivated": _to("active", "deleted"),
        "killed": _to("deleted"),
    },
    terminal=("deleted",),
)

#: A block volume in a volume datastore (Cinder-like).
VOLUME = StateMachine.build(
    "volume",
    "A block volume in a volume datastore (Cinder-like). Attach and detach go through "
    "`attaching`/`detaching`; an aborted attach falls back to `available` and an aborted "
    "detach to `in-use`. A failure while creating, attaching, detaching or deleting "
    "leaves the volume in `error`, from which it can only be deleted.",
    "creating",
    {
        "creating": _to("available", "error"),
        "available": _to("attaching", "extending", "uploading", "deleting"),
        "attaching": _to("in-use", "available", "error"),
        "in-use": _to("detaching"),
        "detaching": _to("available", "in-use", "error"),
        "extending": _to("available"),
        "uploading": _to("available"),
        "deleting": _to("deleted", "error"),
        "error": _to("deleting"),
    },
    terminal=("deleted",),
)

#: A port on a virtual network (Neutron-like).
PORT = StateMachine.build(
    "port",
    "A port on a virtual network (Neutron-like): a MAC, fixed IPs and security groups, "
    "`down` until bound to a device, `build` while the agent wires it, `active` once wired.",
    "down",
    {
        "down": _to("build", "deleted"),
        "build": _to("active", "deleted"),
        "active": _to("down", "deleted"),
    },
    terminal=("deleted",),
)

#: A compute node running the nubes agent.
HOST = StateMachine.build(
    "host",
    "A compute node running the nubes agent (OpenNebula-like host states): `init` until its "
    "first heartbeat, then `monitored`; `error` when it misses heartbeats or a probe fails, "
    "`offline` or `disabled` by the operator (disabled hosts keep their instances but get no "
    "new ones).",
    "init",
    {
        "init": _to("monitored", "error", "deleted"),
        "monitored": _to("error", "offline", "disabled", "deleted"),
        "error": _to("monitored", "deleted"),
        "offline": _to("monitored", "deleted"),
        "disabled": _to("monitored", "deleted"),
    },
    terminal=("deleted",),
)

#: Every machine, in the order of docs/states.md.
ALL_MACHINES: tuple[StateMachine, ...] = (INSTANCE, IMAGE, VOLUME, PORT, HOST)


def render_docs() -> str:
    """The full text of ``docs/states.md``."""
    header = (
        "# State-transition tables\n"
        "\n"
        "This file is generated by `python -m nubes.domain.states` from\n"
        "`src/nubes/domain/states.py` and checked by a test (`tests/unit/test_states.py`);\n"
        "edit the tables there, not here. A transition not listed is refused with\n"
        "`nubes.state.invalid_transition` (409).\n"
    )
    return header + "".join("\n" + machine.to_markdown() for machine in ALL_MACHINES)


if __name__ == "__main__":
    print(render_docs(), end="")
