"""The REQUIREMENTS / RANK expression language (OpenNebula's), read by a hand-written
tokenizer and recursive-descent parser. Text supplied by users is never handed to ``eval``.

    REQUIREMENTS = FREE_MEMORY > 2048 & (HOSTNAME = "node-*" | !(LOAD1 > 4))
    RANK         = FREE_VCPUS * 2 + FREE_MEMORY / 1024

Grammar, loosest binding first (``&`` binds tighter than ``|``, as in OpenNebula):

    or      := and ('|' and)*
    and     := not ('&' not)*
    not     := '!' not | compare
    compare := sum (('=' | '!=' | '>' | '<' | '>=' | '<=') sum)?
    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := '-' unary | atom
    atom    := NUMBER | STRING | NAME | '(' or ')'

Kinds (number, string, condition) are checked while parsing, so a RANK that is a condition or
a requirement such as ``A & 3`` is refused before it reaches a host; a name's kind is only
known per host, so names fit anywhere a number or a string does. What a value *means* on a
host (missing metrics, division by zero, wildcards) is decided in ``evaluate`` (one host, the
reference) and ``vectorized`` (every host at once); this module only reads text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nubes.domain.errors import InvalidInput

MAX_LENGTH = 1024
#: how deeply parentheses, '!' and unary '-' may nest: bounds the parser's recursion
MAX_DEPTH = 32

Kind = Literal["number", "string", "condition", "name"]
COMPARISONS = frozenset({"=", "!=", ">", "<", ">=", "<="})
ORDERINGS = frozenset({">", "<", ">=", "<="})
_SINGLE = frozenset("+-*/=<>&|!()")


class ExpressionError(InvalidInput):
    """A REQUIREMENTS or RANK the parser refuses; ``str()`` is ready to show to a user as is
    ("syntax error at column 12: expected a value after '>'")."""

    def __init__(self, message: str, position: int, *, label: str = "syntax error") -> None:
        super().__init__(f"{label} at column {position}: {message}")
        self.reason = message
        self.position = position


# --- the tree ----------------------------------------------------------------------------


# Every node's ``column`` is where its text starts (1-based), for error messages.


@dataclass(frozen=True, slots=True)
class Number:
    value: float
    column: int


@dataclass(frozen=True, slots=True)
class String:
    value: str
    column: int


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    column: int


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Node
    column: int


@dataclass(frozen=True, slots=True)
class Arith:
    op: str
    left: Node
    right: Node
    column: int


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Node
    right: Node
    column: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    column: int


@dataclass(frozen=True, slots=True)
class Logic:
    op: str  # "&" or "|"
    left: Node
    right: Node
    column: int


Node = Number | String | Name | Negate | Arith | Compare | Not | Logic


@dataclass(frozen=True)
class Expression:
    """A parsed REQUIREMENTS (kind "condition") or RANK (kind "number")."""

    text: str
    root: Node
    kind: Literal["condition", "number"]


def parse_requirements(text: str) -> Expression:
    root, kind = _parse(text)
    if kind != "condition":
        raise ExpressionError(
            "REQUIREMENTS must be a condition (such as FREE_MEMORY > 1024), not a value",
            root.column,
            label="type error",
        )
    return Expression(text, root, "condition")


def parse_rank(text: str) -> Expression:
    root, kind = _parse(text)
    if kind not in ("number", "name"):
        what = "a condition" if kind == "condition" else "a string"
        raise ExpressionError(
            f"RANK must be a number (such as FREE_MEMORY or -RUNNING_VMS), not {what}",
            root.column,
            label="type error",
        )
    return Expression(text, root, "number")


def names(expr: Expression | Node) -> tuple[str, ...]:
    """The identifiers an expression reads, in order of first use (the API warns on names
    no host reports)."""
    seen: dict[str, None] = {}
    stack: list[Node] = [expr.root if isinstance(expr, Expression) else expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Name):
            seen.setdefault(node.name, None)
        elif isinstance(node, Negate | Not):
            stack.append(node.operand)
        elif isinstance(node, Arith | Compare | Logic):
            stack.extend((node.right, node.left))
    return tuple(seen)


# --- tokens ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["number", "string", "name", "op", "end"]
    text: str
    column: int
    value: str = ""

    def shown(self) -> str:
        return "the end" if self.kind == "end" else repr(self.text)


def _is_name_start(ch: str) -> bool:
    return ch == "_" or ("A" <= ch <= "Z") or ("a" <= ch <= "z")


def _is_name_char(ch: str) -> bool:
    return _is_name_start(ch) or (ch.isascii() and ch.isdigit())


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == '"':
            i = _read_string(text, i, tokens)
        elif ch.isascii() and ch.isdigit():
            i = _read_number(text, i, tokens)
        elif _is_name_start(ch):
            start = i
            while i < n and _is_name_char(text[i]):
                i += 1
            tokens.append(_Token("name", text[start:i], start + 1))
        elif text.startswith(("!=", ">=", "<="), i):
            tokens.append(_Token("op", text[i : i + 2], i + 1))
            i += 2
        elif ch in _SINGLE:
            tokens.append(_Token("op", ch, i + 1))
            i += 1
        else:
            raise ExpressionError(f"unexpected character {ch!r}", i + 1)
    tokens.append(_Token("end", "", n + 1))
    return tokens


def _read_string(text: str, start: int, tokens: list[_Token]) -> int:
    """A double-quoted string; a backslash takes the next character literally."""
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            tokens.append(_Token("string", text[start : i + 1], start + 1, "".join(chars)))
            return i + 1
        if ch == "\\" and i + 1 < len(text):
            i += 1
            ch = text[i]
        chars.append(ch)
        i += 1
    raise ExpressionError("unterminated string", start + 1)


def _read_number(text: str, start: int, tokens: list[_Token]) -> int:
    i = start
    while i < len(text) and text[i].isascii() and text[i].isdigit():
        i += 1
    if i + 1 < len(text) and text[i] == "." and text[i + 1].isascii() and text[i + 1].isdigit():
        i += 1
        while i < len(text) and text[i].isascii() and text[i].isdigit():
            i += 1
    if i < len(text) and (_is_name_char(text[i]) or text[i] == "."):
        end = i
        while end < len(text) and (_is_name_char(text[end]) or text[end] == "."):
            end += 1
        raise ExpressionError(f"malformed number {text[start:end]!r}", start + 1)
    tokens.append(_Token("number", text[start:i], start + 1))
    return i


# --- the parser --------------------------------------------------------------------------


def _parse(text: str) -> tuple[Node, Kind]:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    parser = _Parser(_tokenize(text))
    if parser.peek.kind == "end":
        raise ExpressionError("empty expression", parser.peek.column)
    node, kind = parser.parse_or()
    token = parser.peek
    if token.kind != "end":
        if token.text == ")":
            raise ExpressionError("unexpected ')' with no '(' to close", token.column)
        raise ExpressionError(
            f"unexpected {token.shown()} after {parser.previous.shown()}", token.column
        )
    return node, kind


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    @property
    def peek(self) -> _Token:
        return self.tokens[self.index]

    @property
    def previous(self) -> _Token:
        return self.tokens[self.index - 1]

    def take(self, *ops: str) -> _Token | None:
        token = self.peek
        if token.kind == "op" and token.text in ops:
            self.index += 1
            return token
        return None

    def nest(self, column: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep", column)

    def parse_or(self) -> tuple[Node, Kind]:
        left, kind = self.parse_and()
        while op := self.take("|"):
            right, right_kind = self.parse_and()
            _need_condition(op, left, kind, right, right_kind)
            left, kind = Logic("|", left, right, left.column), "condition"
        return left, kind

    def parse_and(self) -> tuple[Node, Kind]:
        left, kind = self.parse_not()
        while op := self.take("&"):
            right, right_kind = self.parse_not()
            _need_condition(op, left, kind, right, right_kind)
            left, kind = Logic("&", left, right, left.column), "condition"
        return left, kind

    def parse_not(self) -> tuple[Node, Kind]:
        op = self.take("!")
        if op is None:
            return self.parse_compare()
        self.nest(op.column)
        operand, kind = self.parse_not()
        self.depth -= 1
        if kind != "condition":
            raise ExpressionError(
                "'!' negates a condition (such as !(LOAD1 > 4)), not a value",
                operand.column,
                label="type error",
            )
        return Not(operand, op.column), "condition"

    def parse_compare(self) -> tuple[Node, Kind]:
        left, left_kind = self.parse_sum()
        op = self.take(*COMPARISONS)
        if op is None:
            return left, left_kind
        right, right_kind = self.parse_sum()
        if self.peek.kind == "op" and self.peek.text in COMPARISONS:
            raise ExpressionError(
                "comparisons cannot be chained; join them with & or |", self.peek.column
            )
        _check_comparison(op, left, left_kind, right, right_kind)
        return Compare(op.text, left, right, left.column), "condition"

    def parse_sum(self) -> tuple[Node, Kind]:
        left, kind = self.parse_product()
        while op := self.take("+", "-"):
            right, right_kind = self.parse_product()
            _need_number(left, kind)
            _need_number(right, right_kind)
            left, kind = Arith(op.text, left, right, left.column), "number"
        return left, kind

    def parse_product(self) -> tuple[Node, Kind]:
        left, kind = self.parse_unary()
        while op := self.take("*", "/"):
            right, right_kind = self.parse_unary()
            _need_number(left, kind)
            _need_number(right, right_kind)
            left, kind = Arith(op.text, left, right, left.column), "number"
        return left, kind

    def parse_unary(self) -> tuple[Node, Kind]:
        op = self.take("-")
        if op is None:
            return self.parse_atom()
        self.nest(op.column)
        operand, kind = self.parse_unary()
        self.depth -= 1
        _need_number(operand, kind)
        return Negate(operand, op.column), "number"

    def parse_atom(self) -> tuple[Node, Kind]:
        token = self.peek
        if token.kind == "number":
            self.index += 1
            return Number(float(token.text), token.column), "number"
        if token.kind == "string":
            self.index += 1
            return String(token.value, token.column), "string"
        if token.kind == "name":
            self.index += 1
            return Name(token.text, token.column), "name"
        if token.text == "(":
            self.index += 1
            self.nest(token.column)
            node, kind = self.parse_or()
            self.depth -= 1
            if self.take(")") is None:
                raise ExpressionError(
                    f"expected ')' to close the '(' at column {token.column}, "
                    f"found {self.peek.shown()}",
                    self.peek.column,
                )
            return node, kind
        if self.index == 0:
            raise ExpressionError(f"expected a value, found {token.shown()}", token.column)
        raise ExpressionError(f"expected a value after {self.previous.shown()}", token.column)


def _need_number(node: Node, kind: Kind) -> None:
    if kind in ("number", "name"):
        return
    what = "a string" if kind == "string" else "a condition"
    raise ExpressionError(f"cannot do arithmetic on {what}", node.column, label="type error")


def _need_condition(op: _Token, left: Node, left_kind: Kind, right: Node, right_kind: Kind) -> None:
    for node, kind in ((left, left_kind), (right, right_kind)):
        if kind != "condition":
            raise ExpressionError(
                f"'{op.text}' joins conditions (such as LOAD1 < 4), not values",
                node.column,
                label="type error",
            )


def _check_comparison(
    op: _Token, left: Node, left_kind: Kind, right: Node, right_kind: Kind
) -> None:
    for node, kind in ((left, left_kind), (right, right_kind)):
        if kind == "condition":
            raise ExpressionError(
                "cannot compare a condition; join conditions with & or |",
                node.column,
                label="type error",
            )
        if kind == "string" and op.text in ORDERINGS:
            raise ExpressionError(
                f"'{op.text}' compares numbers; strings compare only with = and !=",
                node.column,
                label="type error",
            )
    if {left_kind, right_kind} == {"string", "number"}:
        raise ExpressionError(
            "cannot compare a string with a number", op.column, label="type error"
        )
