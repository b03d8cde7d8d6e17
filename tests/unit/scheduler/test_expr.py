"""The REQUIREMENTS / RANK language: grammar, kinds, error positions, and what an expression
means on one host (missing metrics, division by zero, wildcards)."""

from __future__ import annotations

import builtins
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nubes.domain.errors import InvalidInput
from nubes.scheduler import ExpressionError, names, parse_rank, parse_requirements
from nubes.scheduler.evaluate import evaluate, wildcard_match
from nubes.scheduler.expr import MAX_DEPTH, MAX_LENGTH


def holds(text: str, **attributes: Any) -> bool:
    result = evaluate(parse_requirements(text), attributes)
    assert isinstance(result, bool)
    return result


def rank(text: str, **attributes: Any) -> float:
    result = evaluate(parse_rank(text), attributes)
    assert isinstance(result, float)
    return result


# --- grammar -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2 + 3 * 4", 14.0),
        ("(2 + 3) * 4", 20.0),
        ("10 - 4 - 3", 3.0),  # left-associative
        ("8 / 4 / 2", 1.0),
        ("-2 * 3", -6.0),
        ("- -3", 3.0),
        ("1.5 * 2", 3.0),
        ("-RUNNING_VMS", -7.0),
        ("FREE_VCPUS * 2 + FREE_MEMORY / 1024", 12.0),
    ],
)
def test_arithmetic_precedence(text: str, value: float) -> None:
    assert rank(text, RUNNING_VMS=7, FREE_VCPUS=4, FREE_MEMORY=4096) == value


def test_and_binds_tighter_than_or() -> None:
    # as (X = 1) | ((X = 2) & (X = 3)): true for X = 1; the other grouping would be false
    assert holds("X = 1 | X = 2 & X = 3", X=1)
    assert not holds("(X = 1 | X = 2) & X = 3", X=1)


def test_not_and_parentheses() -> None:
    assert holds("!(LOAD1 > 4)", LOAD1=2)
    assert not holds("!(LOAD1 > 4)", LOAD1=5)
    assert holds("!LOAD1 > 4", LOAD1=2)  # '!' applies to the comparison
    assert holds("!!(LOAD1 > 4)", LOAD1=5)


@pytest.mark.parametrize(
    ("text", "true_for", "false_for"),
    [
        ("A = 3", 3, 4),
        ("A != 3", 4, 3),
        ("A > 3", 4, 3),
        ("A < 3", 2, 3),
        ("A >= 3", 3, 2),
        ("A <= 3", 3, 4),
    ],
)
def test_comparisons(text: str, true_for: float, false_for: float) -> None:
    assert holds(text, A=true_for)
    assert not holds(text, A=false_for)


def test_names_lists_identifiers_in_order_of_first_use() -> None:
    expr = parse_requirements('A > 1 & (B = "x" | A < C) & !(D_2 = C)')
    assert names(expr) == ("A", "B", "C", "D_2")
    assert names(parse_rank("7")) == ()


def test_whitespace_and_string_escapes() -> None:
    assert holds('\tNAME\n=\r"say \\"hi\\""', NAME='say "hi"')


# --- errors, with the column a user must look at -----------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FREE_MEMORY >", "syntax error at column 14: expected a value after '>'"),
        ("FREE_MEMORY > > 3", "syntax error at column 15: expected a value after '>'"),
        ("LOAD1 < 4 & ", "syntax error at column 13: expected a value after '&'"),
        ("A >= <= 3", "syntax error at column 6: expected a value after '>='"),
        ("A == 3", "syntax error at column 4: expected a value after '='"),
        (
            "(LOAD1 < 4",
            "syntax error at column 11: expected ')' to close the '(' at column 1, found the end",
        ),
        ("LOAD1 < 4)", "syntax error at column 10: unexpected ')' with no '(' to close"),
        ('HOSTNAME = "node-*', "syntax error at column 12: unterminated string"),
        ("LOAD1 # 3", "syntax error at column 7: unexpected character '#'"),
        ("A.b > 1", "syntax error at column 2: unexpected character '.'"),
        ("1.2.3 > A", "syntax error at column 1: malformed number '1.2.3'"),
        ("3abc > 1", "syntax error at column 1: malformed number '3abc'"),
        (
            "A = B = C",
            "syntax error at column 7: comparisons cannot be chained; join them with & or |",
        ),
        ("", "syntax error at column 1: empty expression"),
        ("   ", "syntax error at column 4: empty expression"),
        ("A > 1 B", "syntax error at column 7: unexpected 'B' after '1'"),
        (
            'HOSTNAME > "a"',
            "type error at column 12: '>' compares numbers; strings compare only with = and !=",
        ),
        ('"abc" = 5', "type error at column 7: cannot compare a string with a number"),
        (
            "A & 3 > 1",
            "type error at column 1: '&' joins conditions (such as LOAD1 < 4), not values",
        ),
        ('"a" + 1 > 2', "type error at column 1: cannot do arithmetic on a string"),
        ("1 + (A > 2) > 0", "type error at column 6: cannot do arithmetic on a condition"),
        (
            "!3",
            "type error at column 2: '!' negates a condition (such as !(LOAD1 > 4)), not a value",
        ),
        (
            "FREE_MEMORY",
            "type error at column 1: REQUIREMENTS must be a condition (such as FREE_MEMORY > "
            "1024), not a value",
        ),
    ],
)
def test_requirement_errors_name_the_column(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_requirements(text)
    assert str(caught.value) == message
    assert caught.value.position == int(message.split("column ")[1].split(":")[0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "  LOAD1 > 3",
            "type error at column 3: RANK must be a number (such as FREE_MEMORY or "
            "-RUNNING_VMS), not a condition",
        ),
        (
            '"x"',
            "type error at column 1: RANK must be a number (such as FREE_MEMORY or "
            "-RUNNING_VMS), not a string",
        ),
        ("FREE_MEMORY /", "syntax error at column 14: expected a value after '/'"),
    ],
)
def test_rank_errors(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        parse_rank(text)


def test_expression_errors_are_400s_with_the_request_code() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_requirements("A >")
    assert caught.value.error_code == "nubes.request.invalid"
    assert caught.value.message == "syntax error at column 4: expected a value after '>'"


def test_length_and_depth_are_limited() -> None:
    with pytest.raises(ExpressionError, match="column 1025: expression is longer than 1024"):
        parse_requirements("A" * (MAX_LENGTH + 1))
    parse_requirements("A > " + "1" * (MAX_LENGTH - 4))  # exactly the limit is fine
    deep = "(" * (MAX_DEPTH + 8) + "A > 1" + ")" * (MAX_DEPTH + 8)
    with pytest.raises(ExpressionError, match=f"column {MAX_DEPTH + 1}: expression nested"):
        parse_requirements(deep)
    with pytest.raises(ExpressionError, match="nested more than"):
        parse_rank("-" * 100 + "1")
    with pytest.raises(ExpressionError, match="nested more than"):
        parse_requirements("!" * 100 + "(A > 1)")
    ok = "(" * MAX_DEPTH + "A > 1" + ")" * MAX_DEPTH
    assert holds(ok, A=2)


def test_long_flat_expressions_are_not_limited_by_depth() -> None:
    text = " + ".join(["A"] * 200)
    assert rank(text, A=1) == 200.0


def test_python_is_never_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec/compile called")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    for text in ('__import__("os")', "os.system(1) > 0", "A > 1; B", "[A] > 1", "A ** 2 > 1"):
        with pytest.raises(ExpressionError, match="syntax error"):
            parse_requirements(text)
    assert holds('LOAD1 < 2 & HOSTNAME = "n*"', LOAD1=1, HOSTNAME="node")
    assert rank("A * 2 - 1", A=3) == 5.0


# --- meaning on one host -----------------------------------------------------------------


def test_a_missing_metric_makes_its_comparison_false() -> None:
    for text in ("GPU > 0", "GPU < 0", "GPU = 0", "GPU != 0", "GPU + 1 > 0", "GPU / 1 >= 0"):
        assert not holds(text), text
    assert holds("GPU > 0 | LOAD1 < 4", LOAD1=1)  # the other side may still hold
    assert not holds("GPU > 0 & LOAD1 < 4", LOAD1=1)
    assert holds("!(GPU > 0)")  # negation of a false comparison, as OpenNebula does


def test_a_string_where_a_number_is_needed_counts_as_missing() -> None:
    assert not holds("OS > 1", OS="linux")
    assert not holds("OS != 1", OS="linux")
    assert not holds('LOAD1 = "1"', LOAD1=1.0)
    assert rank("OS + 2", OS="linux") == 2.0


def test_rank_counts_a_missing_metric_as_zero() -> None:
    assert rank("FREE_MEMORY") == 0.0
    assert rank("FREE_MEMORY + 5") == 5.0
    assert rank("-RUNNING_VMS") == 0.0


def test_division_by_zero_gives_zero() -> None:
    assert rank("A / 0", A=5) == 0.0
    assert rank("A / B", A=5, B=0) == 0.0
    assert holds("A / 0 = 0", A=5)
    assert not holds("GPU / 0 = 0")  # a missing dividend stays missing


def test_booleans_in_metrics_are_numbers() -> None:
    assert holds("SSD = 1", SSD=True)


@pytest.mark.parametrize(
    ("value", "pattern", "matches"),
    [
        ("node-1", "node-*", True),
        ("xnode-1", "node-*", False),
        ("node-1", "*-1", True),
        ("node-12", "*-1", False),
        ("node-1", "n*e-*1", True),
        ("node-1", "*", True),
        ("", "*", True),
        ("node", "node", True),
        ("node", "nod", False),
        ("Node-1", "node-*", False),  # case-sensitive
        ("aXbXc", "a*b*c", True),
        ("abc", "a*b*b*c", False),
        ("ab", "a**b", True),
    ],
)
def test_wildcards(value: str, pattern: str, matches: bool) -> None:
    assert wildcard_match(value, pattern) is matches
    assert holds(f'HOSTNAME = "{pattern}"', HOSTNAME=value) is matches
    assert holds(f'"{pattern}" = HOSTNAME', HOSTNAME=value) is matches  # literal on the left
    assert holds(f'HOSTNAME != "{pattern}"', HOSTNAME=value) is not matches


def test_string_comparisons() -> None:
    assert holds('ZONE = "eu-1"', ZONE="eu-1")
    assert not holds('ZONE != "eu-1"')  # missing: neither equal nor different
    assert holds("A = B", A="x", B="x")
    assert not holds("A = B", A="x", B=1.0)
    assert holds("A != B", A="x", B="y")
    assert holds('"abc" = "a*"')  # two literals: the right one is the pattern


@given(st.text(alphabet="ab-*", max_size=8), st.text(alphabet="ab-", max_size=8))
def test_wildcard_agrees_with_a_regular_expression(pattern: str, value: str) -> None:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    assert wildcard_match(value, pattern) == bool(re.fullmatch(regex, value, re.DOTALL))
