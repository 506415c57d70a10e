"""REDCap filter logic, the subset FIONA uses.

Supported: ``[field]``, ``[field(code)]`` (a checkbox option), ``[event][field]``; literals in
single or double quotes, or bare numbers; ``=``, ``<>``, ``!=``, ``<``, ``>``, ``<=``, ``>=``;
``and``, ``or`` and parentheses. Comparisons are numeric when both sides are numbers, else
textual; ``<``/``>`` comparisons with a blank side are false, as in REDCap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<ref>(?:\[[^\[\]]*\])+)
      | (?P<string>'[^']*'|"[^"]*")
      | (?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+))
      | (?P<operator><>|!=|<=|>=|==|=|<|>)
      | (?P<paren>[()])
      | (?P<word>[A-Za-z_]\w*)
    )""",
    re.VERBOSE,
)
_REFERENCE = re.compile(r"\[(?P<name>[a-z][a-z0-9_]*)(?:\((?P<choice>[^()\[\]]+)\))?\]")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_Comparable = TypeVar("_Comparable", float, str)


class FilterLogicError(ValueError):
    """The logic text is not valid (REDCap answers such requests with an error)."""


@dataclass(frozen=True)
class FieldRef:
    field: str
    event: str = ""  # "" means the event of the row being tested
    choice: str = ""  # checkbox option code of ``[field(code)]``


@dataclass(frozen=True)
class Literal:
    text: str


Operand = FieldRef | Literal


@dataclass(frozen=True)
class Comparison:
    left: Operand
    operator: str
    right: Operand


@dataclass(frozen=True)
class Junction:
    operator: str  # "and" | "or"
    parts: tuple[Logic, ...]


Logic = Comparison | Junction
Lookup = Callable[[FieldRef], str]


def parse_filter_logic(text: str) -> Logic:
    """The parsed logic, or FilterLogicError naming what is wrong."""
    parser = _Parser(_tokenize(text))
    logic = parser.parse_or()
    leftover = parser.peek()
    if leftover is not None:
        raise FilterLogicError(f"unexpected {leftover[1]!r}")
    return logic


def evaluate(logic: Logic, lookup: Lookup) -> bool:
    """Whether the logic holds; ``lookup`` gives the raw value behind each field reference."""
    if isinstance(logic, Junction):
        results = (evaluate(part, lookup) for part in logic.parts)
        return all(results) if logic.operator == "and" else any(results)
    return compare(_value(logic.left, lookup), logic.operator, _value(logic.right, lookup))


def field_refs(logic: Logic) -> list[FieldRef]:
    if isinstance(logic, Junction):
        return [ref for part in logic.parts for ref in field_refs(part)]
    return [o for o in (logic.left, logic.right) if isinstance(o, FieldRef)]


def compare(left: str, operator: str, right: str) -> bool:
    left_number, right_number = _as_number(left), _as_number(right)
    if left_number is not None and right_number is not None:
        return _holds(left_number, operator, right_number)
    if operator not in ("=", "==", "<>", "!=") and (left == "" or right == ""):
        return False
    return _holds(left, operator, right)


def _holds(left: _Comparable, operator: str, right: _Comparable) -> bool:
    if operator in ("=", "=="):
        return left == right
    if operator in ("<>", "!="):
        return left != right
    if operator == "<":
        return left < right
    if operator == ">":
        return left > right
    if operator == "<=":
        return left <= right
    return left >= right


def _as_number(text: str) -> float | None:
    stripped = text.strip()
    return float(stripped) if _NUMBER.fullmatch(stripped) else None


def _value(operand: Operand, lookup: Lookup) -> str:
    return operand.text if isinstance(operand, Literal) else lookup(operand)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterLogicError(f"cannot read the logic at {text[position : position + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match[kind]))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent: or-expressions of and-expressions of comparisons or groups."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise FilterLogicError("the logic ends too early")
        self.position += 1
        return token

    def _next_is_word(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "word" and token[1].lower() == word

    def parse_or(self) -> Logic:
        parts = [self.parse_and()]
        while self._next_is_word("or"):
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Junction("or", tuple(parts))

    def parse_and(self) -> Logic:
        parts = [self.parse_term()]
        while self._next_is_word("and"):
            self.take()
            parts.append(self.parse_term())
        return parts[0] if len(parts) == 1 else Junction("and", tuple(parts))

    def parse_term(self) -> Logic:
        if self.peek() == ("paren", "("):
            self.take()
            inner = self.parse_or()
            if self.take() != ("paren", ")"):
                raise FilterLogicError("a parenthesis is not closed")
            return inner
        left = self.parse_operand()
        kind, operator = self.take()
        if kind != "operator":
            raise FilterLogicError(f"expected a comparison operator, found {operator!r}")
        return Comparison(left, operator, self.parse_operand())

    def parse_operand(self) -> Operand:
        kind, text = self.take()
        if kind == "string":
            return Literal(text[1:-1])
        if kind == "number":
            return Literal(text)
        if kind == "ref":
            return _field_ref(text)
        raise FilterLogicError(f"expected a field or a value, found {text!r}")


def _field_ref(text: str) -> FieldRef:
    groups = _REFERENCE.findall(text)
    if "".join(f"[{name}({choice})]" if choice else f"[{name}]" for name, choice in groups) != text:
        raise FilterLogicError(f"{text} is not a valid field reference")
    if len(groups) == 1:
        name, choice = groups[0]
        return FieldRef(name, "", choice)
    if len(groups) == 2 and not groups[0][1]:
        return FieldRef(groups[1][0], groups[0][0], groups[1][1])
    raise FilterLogicError(f"{text} is not a valid field reference")
