"""Generated docs stay equal to their sources; every policy action and error code is known."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nubes import config
from nubes.domain import errors, states
from nubes.identity.policy import RULES

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("doc", "render"),
    [
        ("errors.md", errors.render_docs),
        ("configuration.md", config.render_docs),
        ("states.md", states.render_docs),
    ],
)
def test_generated_doc_is_current(doc, render):
    assert (ROOT / "docs" / doc).read_text() == render(), f"run `make docs` to refresh docs/{doc}"


def _source() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "src" / "nubes").rglob("*.py"))


def test_every_code_used_in_the_source_is_registered():
    used = set(re.findall(r'code="(nubes\.[a-z_.]+)"', _source()))
    assert used <= set(errors.CODES), sorted(used - set(errors.CODES))


def test_every_policy_action_used_has_a_rule_and_every_rule_is_used():
    source = _source()
    used = set(re.findall(r'"((?:identity|compute|images|hosts):[a-z_]+:[a-z_]+)"', source))
    assert used - set(RULES) == set()
    # once in RULES, at least once where it is enforced
    unused = {a for a in RULES if source.count(f'"{a}"') < 2}
    assert unused == set(), f"rules never enforced: {sorted(unused)}"


def test_unregistered_code_is_refused():
    with pytest.raises(ValueError, match="unregistered"):
        errors.NotFound("x", code="nubes.nope.never")
