"""The state-transition tables: legal and illegal moves, the typed error, the generated docs."""

from __future__ import annotations

import dataclasses
import itertools
import runpy
import warnings
from pathlib import Path

import pytest

from nubes.domain import states
from nubes.domain.errors import CODES, Conflict, InvalidTransition
from nubes.domain.states import (
    ALL_MACHINES,
    HOST,
    IMAGE,
    INSTANCE,
    PORT,
    VOLUME,
    StateMachine,
    render_docs,
)

DOCS = Path(__file__).parents[2] / "docs" / "states.md"


def _edges(machine: StateMachine) -> set[tuple[str, str]]:
    return set(machine.transitions)


# --- the generic machine ------------------------------------------------------------------


def test_all_machines_are_listed_once_with_distinct_entities() -> None:
    assert ALL_MACHINES == (INSTANCE, IMAGE, VOLUME, PORT, HOST)
    assert [m.entity for m in ALL_MACHINES] == ["instance", "image", "volume", "port", "host"]


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.entity)
def test_machine_is_coherent(machine: StateMachine) -> None:
    assert machine.description
    assert machine.initial in machine.states
    assert machine.initial not in machine.terminal
    assert machine.terminal == {"deleted"}
    assert len(set(machine.states)) == len(machine.states)
    for src, dst in machine.transitions:
        assert src != dst
        assert src in machine.states
        assert dst in machine.states
    for state in machine.terminal:
        assert machine.allowed_from(state) == ()
        assert machine.is_terminal(state)
    for state in machine.states:
        if state not in machine.terminal:
            assert machine.allowed_from(state), state
            assert not machine.is_terminal(state)


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.entity)
def test_every_state_can_reach_a_terminal_state(machine: StateMachine) -> None:
    for start in machine.states:
        seen = {start}
        todo = [start]
        while todo:
            for nxt in machine.allowed_from(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & machine.terminal, f"{machine.entity}: {start!r} can never be deleted"


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.entity)
def test_can_agrees_with_check_for_every_pair(machine: StateMachine) -> None:
    for src in machine.states:
        for dst in machine.states:
            if machine.can(src, dst):
                assert (src, dst) in machine.transitions
                machine.check(src, dst)
            else:
                with pytest.raises(InvalidTransition):
                    machine.check(src, dst)


def test_check_is_silent_when_legal() -> None:
    INSTANCE.check("pending", "scheduled")
    VOLUME.check("in-use", "detaching")


def test_illegal_transition_is_typed_with_code_and_message() -> None:
    with pytest.raises(InvalidTransition) as info:
        INSTANCE.check("deleted", "running")
    err = info.value
    assert isinstance(err, Conflict)
    assert err.error_code == "nubes.state.invalid_transition"
    assert err.error_code in CODES
    assert (
        str(err) == "instance cannot go from 'deleted' to 'running' (allowed from 'deleted': none)"
    )
    assert err.message == str(err)


def test_message_lists_allowed_next_states_in_order() -> None:
    with pytest.raises(InvalidTransition) as info:
        INSTANCE.check("running", "building")
    assert str(info.value) == (
        "instance cannot go from 'running' to 'building' (allowed from 'running': "
        "'stopping', 'rebooting', 'migrating', 'error', 'deleting')"
    )


def test_message_names_the_entity() -> None:
    with pytest.raises(InvalidTransition, match=r"^volume cannot go from 'in-use' to 'deleting'"):
        VOLUME.check("in-use", "deleting")
    with pytest.raises(InvalidTransition, match=r"^image cannot go from 'deleted'"):
        IMAGE.check("deleted", "active")


def test_self_transition_is_refused() -> None:
    assert not INSTANCE.can("running", "running")
    with pytest.raises(InvalidTransition, match="from 'running' to 'running'"):
        INSTANCE.check("running", "running")


@pytest.mark.parametrize(
    ("src", "dst"), [("runing", "stopped"), ("running", "shutoff"), ("", "running")]
)
def test_unknown_state_is_a_programming_error(src: str, dst: str) -> None:
    with pytest.raises(ValueError, match="unknown instance state"):
        INSTANCE.can(src, dst)
    with pytest.raises(ValueError, match="unknown instance state"):
        INSTANCE.check(src, dst)


def test_is_terminal_rejects_unknown_state() -> None:
    with pytest.raises(ValueError, match="unknown port state 'gone'"):
        PORT.is_terminal("gone")


def test_machine_is_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        INSTANCE.initial = "running"  # type: ignore[misc]
    assert len({*ALL_MACHINES}) == len(ALL_MACHINES)


def test_build_orders_states_initial_then_sources_then_terminal() -> None:
    machine = StateMachine.build(
        "thing", "A thing.", "a", {"a": ["b", "gone"], "b": ["a", "gone"]}, terminal=["gone"]
    )
    assert machine.states == ("a", "b", "gone")
    assert machine.transitions == {("a", "b"), ("a", "gone"), ("b", "a"), ("b", "gone")}
    assert machine.terminal == {"gone"}


@pytest.mark.parametrize(
    ("edges", "terminal", "problem"),
    [
        ({"a": ["a", "z"]}, ["z"], "self-transition on 'a'"),
        ({"a": ["z"], "z": ["a"]}, ["z"], "terminal state 'z' has a way out"),
        ({"a": ["b"], "c": ["z"], "b": ["z"]}, ["z"], "unreachable from 'a': ['c']"),
        ({"a": ["b", "z"]}, ["z"], "non-terminal state 'b' has no way out"),
        ({"a": ["x-y", "x_y"], "x-y": ["z"], "x_y": ["z"]}, ["z"], "same diagram id"),
    ],
)
def test_build_refuses_incoherent_tables(
    edges: dict[str, list[str]], terminal: list[str], problem: str
) -> None:
    with pytest.raises(
        ValueError, match=r"bad thing state machine: .*" + problem.replace("[", r"\[")
    ):
        StateMachine.build("thing", "A thing.", "a", edges, terminal=terminal)


def test_constructor_refuses_unknown_states() -> None:
    with pytest.raises(ValueError, match="initial state 'q' is not a state"):
        StateMachine("thing", "A thing.", "q", ("a", "z"), frozenset({("a", "z")}), frozenset("z"))
    with pytest.raises(ValueError, match="uses an unknown state"):
        StateMachine(
            "thing",
            "A thing.",
            "a",
            ("a", "z"),
            frozenset({("a", "z"), ("a", "q")}),
            frozenset("z"),
        )
    with pytest.raises(ValueError, match="terminal state 'q' is not a state"):
        StateMachine("thing", "A thing.", "a", ("a", "z"), frozenset({("a", "z")}), frozenset("zq"))
    with pytest.raises(ValueError, match="duplicate states"):
        StateMachine(
            "thing", "A thing.", "a", ("a", "a", "z"), frozenset({("a", "z")}), frozenset("z")
        )


# --- instance -----------------------------------------------------------------------------

INSTANCE_LIVE = [s for s in INSTANCE.states if s not in {"error", "deleting", "deleted"}]


def test_instance_states() -> None:
    assert INSTANCE.initial == "pending"
    assert set(INSTANCE.states) == {
        "pending",
        "scheduled",
        "building",
        "booting",
        "running",
        "stopping",
        "stopped",
        "rebooting",
        "migrating",
        "error",
        "deleting",
        "deleted",
    }


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("pending", "scheduled"),
        ("scheduled", "building"),
        ("building", "booting"),
        ("booting", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
        ("stopped", "booting"),
        ("running", "rebooting"),
        ("rebooting", "running"),
        ("running", "migrating"),
        ("migrating", "running"),
        ("error", "deleting"),
        ("error", "pending"),
        ("pending", "deleting"),
        ("scheduled", "deleting"),
        ("deleting", "deleted"),
        ("deleting", "error"),
    ],
)
def test_instance_legal(src: str, dst: str) -> None:
    assert INSTANCE.can(src, dst)
    INSTANCE.check(src, dst)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("pending", "running"),
        ("pending", "building"),
        ("scheduled", "running"),
        ("building", "running"),
        ("running", "stopped"),
        ("stopped", "running"),
        ("stopped", "migrating"),
        ("stopped", "rebooting"),
        ("rebooting", "stopped"),
        ("migrating", "stopped"),
        ("error", "running"),
        ("error", "deleted"),
        ("running", "deleted"),
        ("running", "pending"),
        ("deleting", "running"),
        ("deleted", "running"),
        ("deleted", "deleting"),
        ("deleted", "error"),
        ("deleted", "pending"),
    ],
)
def test_instance_illegal(src: str, dst: str) -> None:
    assert not INSTANCE.can(src, dst)
    with pytest.raises(InvalidTransition):
        INSTANCE.check(src, dst)


@pytest.mark.parametrize("state", [s for s in INSTANCE.states if s not in {"deleted", "error"}])
def test_every_non_terminal_instance_state_can_reach_error(state: str) -> None:
    assert INSTANCE.can(state, "error")


@pytest.mark.parametrize("state", [s for s in INSTANCE.states if s not in {"deleted", "deleting"}])
def test_every_non_terminal_instance_state_can_be_deleted(state: str) -> None:
    assert INSTANCE.can(state, "deleting")


def test_only_deleting_reaches_deleted() -> None:
    assert [s for s in INSTANCE.states if INSTANCE.can(s, "deleted")] == ["deleting"]


def test_only_running_can_migrate_or_reboot() -> None:
    assert [s for s in INSTANCE.states if INSTANCE.can(s, "migrating")] == ["running"]
    assert [s for s in INSTANCE.states if INSTANCE.can(s, "rebooting")] == ["running"]


def test_instance_lifecycle_path_is_legal() -> None:
    path = [
        "pending",
        "scheduled",
        "building",
        "booting",
        "running",
        "rebooting",
        "running",
        "migrating",
        "running",
        "stopping",
        "stopped",
        "booting",
        "running",
        "error",
        "pending",
        "scheduled",
        "deleting",
        "deleted",
    ]
    for src, dst in itertools.pairwise(path):
        INSTANCE.check(src, dst)


# --- image, volume, port, host ------------------------------------------------------------


def test_image_table() -> None:
    assert IMAGE.initial == "queued"
    for edge in [
        ("queued", "saving"),
        ("saving", "active"),
        ("queued", "importing"),
        ("importing", "active"),
        ("active", "deactivated"),
        ("deactivated", "active"),
        ("saving", "queued"),
        ("queued", "killed"),
        ("saving", "killed"),
        ("importing", "killed"),
        ("killed", "deleted"),
    ]:
        assert IMAGE.can(*edge), edge
    for state in IMAGE.states:
        if state != "deleted":
            assert IMAGE.can(state, "deleted"), state
    for edge in [
        ("queued", "active"),
        ("active", "saving"),
        ("active", "queued"),
        ("killed", "queued"),
        ("killed", "active"),
        ("deactivated", "saving"),
        ("deleted", "active"),
        ("importing", "queued"),
    ]:
        assert not IMAGE.can(*edge), edge


def test_image_killed_only_from_upload_states() -> None:
    assert {s for s in IMAGE.states if IMAGE.can(s, "killed")} == {"queued", "saving", "importing"}


def test_volume_table() -> None:
    assert VOLUME.initial == "creating"
    legal = {
        ("creating", "available"),
        ("available", "attaching"),
        ("attaching", "in-use"),
        ("in-use", "detaching"),
        ("detaching", "available"),
        ("available", "deleting"),
        ("deleting", "deleted"),
        ("creating", "error"),
        ("attaching", "error"),
        ("detaching", "error"),
        ("deleting", "error"),
        ("error", "deleting"),
        ("available", "extending"),
        ("extending", "available"),
        ("available", "uploading"),
        ("uploading", "available"),
        ("attaching", "available"),
        ("detaching", "in-use"),
    }
    assert _edges(VOLUME) == legal
    with pytest.raises(InvalidTransition, match="allowed from 'in-use': 'detaching'"):
        VOLUME.check("in-use", "deleting")
    with pytest.raises(InvalidTransition, match="allowed from 'error': 'deleting'"):
        VOLUME.check("error", "available")


def test_port_table() -> None:
    assert PORT.initial == "down"
    assert _edges(PORT) == {
        ("down", "build"),
        ("build", "active"),
        ("active", "down"),
        ("down", "deleted"),
        ("build", "deleted"),
        ("active", "deleted"),
    }


def test_host_table() -> None:
    assert HOST.initial == "init"
    assert _edges(HOST) == {
        ("init", "monitored"),
        ("init", "error"),
        ("monitored", "error"),
        ("monitored", "offline"),
        ("monitored", "disabled"),
        ("error", "monitored"),
        ("offline", "monitored"),
        ("disabled", "monitored"),
        ("init", "deleted"),
        ("monitored", "deleted"),
        ("error", "deleted"),
        ("offline", "deleted"),
        ("disabled", "deleted"),
    }
    assert not HOST.can("offline", "disabled")
    assert not HOST.can("deleted", "monitored")


# --- rendering ----------------------------------------------------------------------------


def test_to_markdown_has_table_and_mermaid_diagram() -> None:
    text = VOLUME.to_markdown()
    assert text.startswith("## volume\n\n")
    assert "Initial state: `creating`. Terminal states: `deleted`." in text
    assert "| from | allowed next states |" in text
    assert "| `in-use` | `detaching` |" in text
    assert "| `deleted` | — (terminal) |" in text
    assert "```mermaid\nstateDiagram-v2\n" in text
    assert '    state "in-use" as in_use\n' in text
    assert "    [*] --> creating\n" in text
    assert "    attaching --> in_use\n" in text
    assert "    deleted --> [*]\n" in text
    assert text.endswith("```\n")


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=lambda m: m.entity)
def test_markdown_lists_every_state_and_every_edge(machine: StateMachine) -> None:
    text = machine.to_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(machine.states)
    arrows = [line for line in text.splitlines() if " --> " in line and "[*]" not in line]
    assert len(arrows) == len(machine.transitions)


def test_render_docs_has_title_note_and_every_machine() -> None:
    text = render_docs()
    assert text.startswith("# State-transition tables\n\n")
    assert "generated by `python -m nubes.domain.states`" in text
    assert "checked by a test" in text
    for machine in ALL_MACHINES:
        assert f"\n## {machine.entity}\n" in text
        assert machine.to_markdown() in text
    assert text.endswith("\n")
    assert not text.endswith("\n\n")


def test_docs_states_md_is_up_to_date() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_docs(), (
        "docs/states.md is stale: run PYTHONPATH=src python -m nubes.domain.states > docs/states.md"
    )


def test_main_prints_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        # runpy warns that the module is already imported; harmless here.
        warnings.simplefilter("ignore", RuntimeWarning)
        runpy.run_module(states.__name__, run_name="__main__")
    assert capsys.readouterr().out == render_docs()
