"""Series classification: the original FIONA ``classifyRules.json`` language, one semantics.

A rule file is a JSON array of *definitions*; each names a ``type`` that a series gets when all
of the definition's conditions hold for an image. :meth:`RuleSet.from_json` reads the original
format unchanged and checks everything that can be checked before an image arrives (keys,
operators, references and their cycles, tag specs, numbers, regular expressions), so a broken
file fails at load time with one message naming the definition and the field.
:func:`classify_image` applies the rules to one image and never raises. Single conditions are
evaluated in ``operators.py``; the language is documented in ``docs/classify-rules.md``.
"""

import importlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydicom.dataset import Dataset

from fiona_common.errors import ConfigError
from services.classifier.operators import (
    CHARSET,
    CLASSIFY_TYPE,
    NUMERIC_OPERATORS,
    PRESENCE_OPERATORS,
    Comparison,
    ConditionFailure,
    Operands,
    Operator,
    TagSpec,
    TagSpecError,
    Value,
    comparison_failure,
    parse_tag_spec,
    raw_input,
    value_of,
)

DEFAULT_RULES = Path(__file__).parent / "default_rules.json"
DEFAULT_APPROX_LEVEL = 1e-4
OUTCOMES_KEPT = 4096
SERIES_LEVEL = "SeriesLevel"

_DEFINITION_KEYS = frozenset({"type", "id", "description", "check", "rules", "comment"})
_CONDITION_KEYS = frozenset(
    {"tag", "value", "operator", "negate", "approxLevel", "rule", "notrule", "comment"}
)
_NEGATE = {"yes": True, "no": False, True: True, False: False}
# The standard library's own regular expression parser (``sre_parse`` is its deprecated alias).
_RE_PARSER = importlib.import_module("re._parser")
_BACKTRACKING_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT"})


class RuleFileError(ConfigError):
    """A rule file that cannot be used; the message names the definition and the field.

    The parts are attributes too: ``source``, ``problem``, and ``index`` (0-based position in
    the file), ``definition_id``, ``definition_type``, ``field`` (e.g. ``rules[1].operator``),
    which are None when the file as a whole is wrong (not JSON, not an array, unreadable).
    """

    def __init__(self, source: str, problem: str, definition: "_Blame | None" = None) -> None:
        self.source, self.problem = source, problem
        self.index = definition.index if definition else None
        self.definition_id = definition.id if definition else None
        self.definition_type = definition.type if definition else None
        self.field = definition.field if definition else None
        super().__init__(f"rule file {source}{definition or ''}: {problem}")


@dataclass(frozen=True)
class Reference:
    """A ``rule``/``notrule`` condition: another definition holds (or, negated, does not)."""

    at: str
    keyword: str  # "rule" or "notrule", as written
    target: str
    negate: bool  # notrule, or rule with negate "yes"


Condition = Comparison | Reference


@dataclass(frozen=True)
class Definition:
    """One entry of the rule file: ``type`` applies when every condition holds."""

    index: int
    type: str
    id: str | None
    description: str
    series_level: bool
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class DefinitionTrace:
    """What one definition made of one image: held or not, and why not."""

    index: int
    type: str
    id: str | None
    matched: bool
    failure: ConditionFailure | None = None
    note: str | None = None  # SeriesLevel bookkeeping: type kept out or removed

    @property
    def reason(self) -> str:
        """One line: the failing condition and/or the SeriesLevel note."""
        parts = [str(self.failure)] if self.failure else []
        return "; ".join([*parts, *([self.note] if self.note else [])])


@dataclass(frozen=True)
class Classification:
    """The series' types after one more image, and what to carry to the next image."""

    types: list[str]
    series_level_failed: frozenset[str]
    trace: list[DefinitionTrace]


@dataclass(frozen=True)
class RuleSet:
    """A loaded, checked rule file."""

    definitions: tuple[Definition, ...]
    source: str

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> "RuleSet":
        """Parse and check a rule file's text; raises :class:`RuleFileError`."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            where = f"line {err.lineno}, column {err.colno}"
            raise RuleFileError(source, f"not valid JSON: {err.msg} ({where})") from None
        if not isinstance(raw, list):
            raise RuleFileError(source, "expected a JSON array of definitions")
        definitions = tuple(_parse_definition(source, i, entry) for i, entry in enumerate(raw))
        _check_ids(source, definitions)
        _check_series_level(source, definitions)
        return cls(definitions, source)

    @classmethod
    def load(cls, path: Path) -> "RuleSet":
        """Read and check the rule file at ``path``."""
        return cls.from_json(read_rule_file(path, str(path)), source=str(path))

    @classmethod
    def default(cls) -> "RuleSet":
        """FIONA's own default rules (``default_rules.json`` beside this module)."""
        return cls.from_json(read_rule_file(DEFAULT_RULES, "<default>"), source="<default>")

    @cached_property
    def by_id(self) -> Mapping[str, Definition]:
        """Definitions that have an ``id``, for ``rule``/``notrule``."""
        return {d.id: d for d in self.definitions if d.id is not None}

    @cached_property
    def last_of_type(self) -> Mapping[str, int]:
        """Index of the last definition of each type: where a SeriesLevel verdict is final."""
        return {d.type: d.index for d in self.definitions}

    @cached_property
    def inputs(self) -> tuple[TagSpec, ...]:
        """Every tag spec a condition reads (both sides), except ClassifyType.

        With the series' types before the image, their raw values decide the whole outcome,
        so they are the key of :attr:`outcomes`.
        """
        specs: dict[TagSpec, None] = {}
        for d in self.definitions:
            for c in d.conditions:
                if isinstance(c, Comparison):
                    specs.update(dict.fromkeys(s for s in (c.tag, c.reference) if s))
        return tuple(s for s in specs if s.name != CLASSIFY_TYPE)

    @cached_property
    def outcomes(self) -> dict[object, "Classification"]:
        """Classifications already made, by their inputs (most images of a series repeat them).

        Evaluating a rule file such as the original ABCD one costs milliseconds per image;
        reading its inputs costs a tenth of that. Bounded by :data:`OUTCOMES_KEPT`.
        """
        return {}


def read_rule_file(path: Path, source: str) -> str:
    """A rule file's text; a :class:`RuleFileError` naming ``source`` if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RuleFileError(source, f"cannot be read: {err}") from None


# ------------------------------------------------------------------------------ loading


@dataclass(frozen=True)
class _Blame:
    """The definition (and field) a load-time error is about."""

    source: str
    index: int
    id: str | None = None
    type: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        names = f"id {self.id!r}, " if self.id else "no id, "
        where = f", definition [{self.index}] ({names}type {self.type!r})"
        return where + (f", field {self.field}" if self.field else "")

    def error(self, field: str | None, problem: str) -> RuleFileError:
        at = _Blame(self.source, self.index, self.id, self.type, field)
        return RuleFileError(self.source, problem, at)


def _parse_definition(source: str, index: int, raw: object) -> Definition:
    if not isinstance(raw, dict):
        raise _Blame(source, index).error(None, "a definition must be a JSON object")
    ident, kind = raw.get("id"), raw.get("type")
    blame = _Blame(source, index, ident if isinstance(ident, str) else None, _shown(kind))
    _check_keys(blame, "", raw, _DEFINITION_KEYS)
    if not isinstance(kind, str) or not kind:
        raise blame.error("type", "required, a non-empty string")
    if ident is not None and (not isinstance(ident, str) or not ident):
        raise blame.error("id", "must be a non-empty string")
    check = raw.get("check")
    if check not in (None, SERIES_LEVEL):
        raise blame.error("check", f"{check!r} is not a check; the only one is {SERIES_LEVEL!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise blame.error("description", "must be a string")
    conditions = raw.get("rules")
    if not isinstance(conditions, list):
        raise blame.error("rules", "required, a list of conditions")
    parsed = tuple(_parse_condition(blame, f"rules[{i}]", c) for i, c in enumerate(conditions))
    return Definition(index, kind, ident, description, check == SERIES_LEVEL, parsed)


def _shown(kind: object) -> str | None:
    return kind if isinstance(kind, str) or kind is None else repr(kind)


def _check_keys(blame: _Blame, at: str, raw: dict[str, object], known: frozenset[str]) -> None:
    # An unknown key is almost always a typo ("negat", "chek") that would silently change
    # what the rule means, so it is refused rather than ignored.
    unknown = sorted(set(raw) - known)
    if unknown:
        field = f"{at}.{unknown[0]}" if at else unknown[0]
        raise blame.error(field, f"unknown key; known keys are {', '.join(sorted(known))}")


def _parse_condition(blame: _Blame, at: str, raw: object) -> Condition:
    if not isinstance(raw, dict):
        raise blame.error(at, "a condition must be a JSON object")
    _check_keys(blame, at, raw, _CONDITION_KEYS)
    negate = _parse_negate(blame, at, raw.get("negate", False))
    if "rule" in raw or "notrule" in raw:
        return _parse_reference(blame, at, raw, negate)
    if "tag" not in raw:
        raise blame.error(f"{at}.tag", "required (or a rule/notrule reference)")
    try:
        tag = parse_tag_spec(raw["tag"])
    except TagSpecError as err:
        raise blame.error(f"{at}.tag", f"{raw['tag']!r}: {err}") from None
    operator = _parse_operator(blame, at, raw.get("operator", Operator.REGEXP.value))
    level = _parse_approx_level(blame, at, raw.get("approxLevel", DEFAULT_APPROX_LEVEL))
    if operator in PRESENCE_OPERATORS:  # a value, if written, means nothing here
        return Comparison(at, tag, operator, Value(), None, None, level, negate)
    if "value" not in raw:
        raise blame.error(f"{at}.value", f"required for operator {operator.value!r}")
    literal, reference = _parse_value(blame, f"{at}.value", raw["value"])
    if reference is None:
        _check_literal(blame, f"{at}.value", operator, raw["value"], literal)
    pattern = _literal_pattern(blame, f"{at}.value", operator, literal, reference)
    return Comparison(at, tag, operator, literal, reference, pattern, level, negate)


def _parse_negate(blame: _Blame, at: str, raw: object) -> bool:
    if isinstance(raw, str | bool) and raw in _NEGATE:
        return _NEGATE[raw]
    raise blame.error(f"{at}.negate", f'{raw!r}: write "yes" (or "no")')


def _parse_reference(blame: _Blame, at: str, raw: dict[str, object], negate: bool) -> Reference:
    keywords = [k for k in ("rule", "notrule") if k in raw]
    extra = sorted(set(raw) & {"tag", "value", "operator", "approxLevel"})
    if len(keywords) > 1 or extra:
        clash = keywords[1] if len(keywords) > 1 else extra[0]
        raise blame.error(f"{at}.{clash}", f"a {keywords[0]} reference stands alone")
    keyword = keywords[0]
    target = raw[keyword]
    if not isinstance(target, str) or not target:
        raise blame.error(f"{at}.{keyword}", "must be the id of another definition")
    return Reference(at, keyword, target, negate != (keyword == "notrule"))


def _parse_operator(blame: _Blame, at: str, raw: object) -> Operator:
    if isinstance(raw, str) and raw in set(Operator):
        return Operator(raw)
    known = ", ".join(op.value for op in Operator)
    raise blame.error(f"{at}.operator", f"unknown operator {raw!r}; known: {known}")


def _parse_approx_level(blame: _Blame, at: str, raw: object) -> float:
    scalar = isinstance(raw, str | int | float) and not isinstance(raw, bool)
    level = value_of(raw).single_number() if scalar else None
    if level is None or level < 0:
        raise blame.error(f"{at}.approxLevel", f"{raw!r} is not a non-negative number")
    return level


def _parse_value(blame: _Blame, at: str, raw: object) -> tuple[Value, TagSpec | None]:
    """The literal, and the tag it refers to when the value is a list shaped like a tag."""
    items = raw if isinstance(raw, list) else [raw]
    if any(isinstance(x, bool) or not isinstance(x, str | int | float) for x in items):
        raise blame.error(at, f"{raw!r}: write a string, a number or a list of those")
    reference = None
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        try:
            reference = parse_tag_spec(raw)
        except TagSpecError:
            reference = None  # a literal list of strings
    return value_of(raw), reference


def _check_literal(blame: _Blame, at: str, op: Operator, raw: object, literal: Value) -> None:
    if op is Operator.APPROX:
        if not literal.items or any(item.number is None for item in literal.items):
            raise blame.error(at, f"{raw!r}: approx needs a number or a list of numbers")
    elif literal.multi:
        raise blame.error(at, f"{raw!r}: {op.value} needs a single value, not a list")
    elif op in NUMERIC_OPERATORS and literal.single_number() is None:
        raise blame.error(at, f"{raw!r}: {op.value} compares numbers; this is not one")


def _literal_pattern(
    blame: _Blame, at: str, op: Operator, literal: Value, reference: TagSpec | None
) -> re.Pattern[str] | None:
    if op is not Operator.REGEXP:
        return None
    try:
        pattern = re.compile(literal.text)
    except re.error as err:
        if reference is not None:
            return None  # only a fallback for an absent reference: it then fails
        raise blame.error(at, f"{literal.text!r} is not a regular expression: {err}") from None
    if has_nested_repeat(literal.text):
        # Python's re has no time limit: "(a+)+$" against 64 hostile characters of a
        # SeriesDescription backtracks for hours and stalls the classifier on that image.
        raise blame.error(
            at,
            f"{literal.text!r}: a repeat inside a repeat (like (a+)+) can take exponential "
            "time on unlucky values; write it without the nesting, e.g. a+",
        )
    return pattern


def has_nested_repeat(text: str) -> bool:
    """Whether a valid pattern repeats, without bound, something itself repeated without bound.

    That shape is what makes backtracking exponential ("catastrophic"). Possessive repeats and
    atomic groups do not backtrack into their body and are allowed.
    """
    return _nested_repeat(_RE_PARSER.parse(text), inside=False)


def _nested_repeat(items: object, inside: bool) -> bool:
    for op, av in items:  # type: ignore[attr-defined]
        if str(op) == "ATOMIC_GROUP":
            continue
        if str(op) in _BACKTRACKING_REPEATS:
            _low, high, body = av
            unbounded = high == _RE_PARSER.MAXREPEAT
            if (unbounded and inside) or _nested_repeat(body, inside or unbounded):
                return True
            continue
        parts = av if isinstance(av, tuple | list) else (av,)
        for part in parts:
            nested = part if isinstance(part, list) else [part]
            for sub in nested:
                if hasattr(sub, "data") and _nested_repeat(sub, inside):
                    return True
    return False


def _check_ids(source: str, definitions: Sequence[Definition]) -> None:
    """Every reference names exactly one definition, and no chain of references loops.

    An id may repeat (the original files give three ABCD-DTI definitions the id GEDTI), but
    a reference to a repeated id would be ambiguous, so that is refused.
    """
    by_id: dict[str, list[Definition]] = {}
    for d in definitions:
        if d.id is not None:
            by_id.setdefault(d.id, []).append(d)
    for d in definitions:
        for ref in _references(d):
            found = by_id.get(ref.target, [])
            if len(found) != 1:
                raise _blame(source, d).error(
                    f"{ref.at}.{ref.keyword}", _reference_problem(ref.target, found)
                )
    unique = {ident: found[0] for ident, found in by_id.items()}
    for d in definitions:
        _check_acyclic(source, d, unique, (d,))


def _reference_problem(target: str, found: list[Definition]) -> str:
    if not found:
        return f"no definition has the id {target!r}"
    indexes = ", ".join(f"[{d.index}]" for d in found)
    return f"ambiguous: definitions {indexes} all have the id {target!r}"


def _references(definition: Definition) -> list[Reference]:
    return [c for c in definition.conditions if isinstance(c, Reference)]


def _check_acyclic(
    source: str, d: Definition, by_id: Mapping[str, Definition], chain: tuple[Definition, ...]
) -> None:
    # Depth-first along references; definitions are few, so no memo is needed.
    for ref in _references(d):
        target = by_id[ref.target]
        if target in chain:
            loop = " -> ".join(str(x.id) for x in (*chain[chain.index(target) :], target))
            field = f"{ref.at}.{ref.keyword}" if d is chain[0] else None
            raise _blame(source, chain[0]).error(field, f"references loop: {loop}")
        _check_acyclic(source, target, by_id, (*chain, target))


def _check_series_level(source: str, definitions: Sequence[Definition]) -> None:
    # Definitions sharing a type are alternatives (one per vendor...), and a type is checked
    # at series level as a whole, so all its definitions must say SeriesLevel or none.
    first: dict[str, Definition] = {}
    for d in definitions:
        other = first.setdefault(d.type, d)
        if other.series_level != d.series_level:
            said = "says" if other.series_level else "does not say"
            problem = f"[{other.index}] of the same type {said} SeriesLevel; they must agree"
            raise _blame(source, d).error("check", problem)


def _blame(source: str, d: Definition) -> _Blame:
    return _Blame(source, d.index, d.id, d.type)


# ------------------------------------------------------------------------------ evaluation


def classify_image(
    rules: RuleSet,
    dataset: Dataset,
    summary: Mapping[str, object],
    previous: Sequence[str],
    series_level_failed: Collection[str] = (),
) -> Classification:
    """Apply ``rules`` to one more image of a series; never raises, whatever the image holds.

    The types come out as an ordered union: ``previous`` (minus SeriesLevel failures) first,
    then the new ones in file order. The same image classified twice changes nothing.

    Args:
        rules: the rule set.
        dataset: the image's header (pixel data not needed).
        summary: the series summary (spec 2.3), read by one-element tags before the dataset.
        previous: the series' types before this image.
        series_level_failed: SeriesLevel types that failed on an earlier image of the series
            (``series_level_failed`` of the previous result); they stay out.
    """
    failed = set(series_level_failed)
    types = list(dict.fromkeys(t for t in previous if t not in failed))
    operands = Operands(dataset, summary, types)
    inputs = (
        tuple(types),
        frozenset(failed),
        raw_input(TagSpec(tag=CHARSET), dataset, summary),
        *(raw_input(s, dataset, summary) for s in rules.inputs),
    )
    known = rules.outcomes.get(inputs)
    if known is not None:
        return Classification(list(known.types), known.series_level_failed, known.trace)
    result = _evaluate(rules, operands, failed)
    if len(rules.outcomes) >= OUTCOMES_KEPT:
        rules.outcomes.clear()  # simplest bound; a series refills it with one evaluation
    rules.outcomes[inputs] = result
    return Classification(list(result.types), result.series_level_failed, result.trace)


def _evaluate(rules: RuleSet, operands: Operands, failed: set[str]) -> Classification:
    types = operands.types
    held: set[str] = set()
    trace = []
    for definition in rules.definitions:
        failure = _failure(rules, definition, operands)
        note = None
        if failure is None:
            held.add(definition.type)
            note = _add_type(definition.type, types, failed)
        if definition.series_level and rules.last_of_type[definition.type] == definition.index:
            note = _settle_series_level(definition.type, held, types, failed) or note
        trace.append(
            DefinitionTrace(
                definition.index, definition.type, definition.id, failure is None, failure, note
            )
        )
    return Classification(types, frozenset(failed), trace)


def _add_type(kind: str, types: list[str], failed: set[str]) -> str | None:
    if kind in failed:
        return f"{kind!r} failed its SeriesLevel check on an earlier image: stays out"
    if kind not in types:
        types.append(kind)
    return None


def _settle_series_level(
    kind: str, held: set[str], types: list[str], failed: set[str]
) -> str | None:
    """After the last definition of a SeriesLevel type: out for good unless one held."""
    if kind in held or kind in failed:
        return None
    failed.add(kind)
    if kind in types:
        types.remove(kind)
    return f"SeriesLevel: {kind!r} does not hold for this image, out for the rest of the series"


def _failure(
    rules: RuleSet,
    definition: Definition,
    operands: Operands,
    via: str = "",
    chain: frozenset[str] = frozenset(),
) -> ConditionFailure | None:
    """The first condition of ``definition`` that does not hold; None when all hold.

    ``via`` and ``chain`` are the references followed to get here: for the words, and so that
    a loop in a RuleSet built by hand (not by :meth:`RuleSet.from_json`) cannot recurse.
    """
    for condition in definition.conditions:
        if isinstance(condition, Reference):
            failure = _reference_failure(rules, condition, operands, via, chain)
        else:
            failure = comparison_failure(condition, operands, via)
        if failure is not None:
            return failure
    return None


def _reference_failure(
    rules: RuleSet, ref: Reference, operands: Operands, via: str, chain: frozenset[str]
) -> ConditionFailure | None:
    at = f"{via}{ref.at}"
    target = rules.by_id.get(ref.target)
    if target is None or ref.target in chain:
        return ConditionFailure(at, ref.target, ref.keyword, "", "no usable definition")
    inner_via = f"{at} > {ref.keyword} {ref.target} > "
    inner = _failure(rules, target, operands, inner_via, chain | {ref.target})
    if not ref.negate:
        return inner
    if inner is not None:
        return None
    return ConditionFailure(at, f"definition {ref.target}", "holds", "", "it holds", negated=True)
