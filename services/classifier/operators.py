"""One classification condition: where its values come from, and how they are compared.

Both sides of a condition (an element of the image, a series-summary field, the series' types,
or the literal written in the rule file) are first turned into a :class:`Value`. The operators
only ever see that one small shape, so they are total: whatever a dataset holds (bytes,
sequences, empty or undecodable elements), a comparison answers True or False and never raises.
``rules.py`` reads rule files and combines conditions into definitions; the meaning of each
operator is documented for admins in ``docs/classify-rules.md``.
"""

import math
import re
import struct
from collections.abc import Hashable, Mapping
from collections.abc import Sequence as ListLike
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cached_property, lru_cache

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.sequence import Sequence

CLASSIFY_TYPE = "ClassifyType"  # the one-element tag that reads the series' types so far

# What converting a raw element to its value can raise on malformed input (wrong length,
# bad number string under strict validation, unknown character set...). Such an element is
# present but unreadable: `exist` holds, every comparison fails.
_DECODE_ERRORS = (
    BytesLengthException,
    ValueError,
    TypeError,
    LookupError,
    NotImplementedError,
    OverflowError,
    struct.error,
)


class Operator(StrEnum):
    """The comparison a condition makes (the rule file's ``operator`` field)."""

    REGEXP = "regexp"
    CONTAINS = "contains"
    EQ = "=="
    NE = "!="
    LT = "<"
    GT = ">"
    APPROX = "approx"
    EXIST = "exist"
    NOTEXIST = "notexist"


NUMERIC_OPERATORS = frozenset({Operator.EQ, Operator.NE, Operator.LT, Operator.GT})
PRESENCE_OPERATORS = frozenset({Operator.EXIST, Operator.NOTEXIST})


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Item:
    """One value of an element: its text as DICOM writes it, and its number if it is one."""

    text: str
    number: float | None


@dataclass(frozen=True)
class Value:
    """What a tag or a literal resolved to.

    ``items`` holds one item for a single value, several for a multi-valued element or a list,
    none for an empty element. ``multi`` tells a list from a single value (``contains`` is
    membership for lists, substring for single values). ``unreadable`` names why a present
    element cannot be compared (a sequence, undecodable bytes...); it is empty otherwise.
    """

    items: tuple[Item, ...] = ()
    multi: bool = False
    unreadable: str = ""

    @cached_property
    def text(self) -> str:
        """The string form a regular expression sees: items joined by ``\\`` as in DICOM."""
        return "\\".join(item.text for item in self.items)

    def single_number(self) -> float | None:
        """The number, when the value is exactly one numeric item."""
        return self.items[0].number if len(self.items) == 1 else None

    def at(self, index: int) -> "Value | None":
        """The ``index``-th item as a value of its own; None (absent) when there is none."""
        if self.unreadable or index >= len(self.items) or (index > 0 and not self.multi):
            return None
        return Value((self.items[index],))

    def describe(self) -> str:
        """A short rendering for traces, e.g. ``'ORIGINAL\\PRIMARY'`` or ``a sequence``."""
        if self.unreadable:
            return self.unreadable
        # Quoted as written (repr() would double DICOM's backslashes), unprintables as "?".
        shown = "".join(c if c.isprintable() else "?" for c in self.text[:80])
        return f"'{shown}...'" if len(self.text) > 80 else f"'{shown}'"


def parse_number(text: str) -> float | None:
    """``text`` as a finite number, or None: ``"256"``, ``" 1.5e3 "``; not ``"nan"``, ``"A"``."""
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def value_of(raw: object) -> Value:
    """Any element value, summary value or JSON literal as a :class:`Value`."""
    if raw is None:
        return Value()
    if isinstance(raw, Sequence | Dataset):
        return Value(unreadable="a sequence")
    if isinstance(raw, str | bytes | bytearray | Mapping):
        return Value((item_of(raw),))
    if isinstance(raw, ListLike):  # list, tuple, MultiValue; not PersonName (iterable, no list)
        return Value(tuple(item_of(x) for x in raw), multi=True)
    return Value((item_of(raw),))


def item_of(raw: object) -> Item:
    """One scalar (str, bytes, int, float, DS/IS, PersonName, UID...) as an :class:`Item`."""
    if isinstance(raw, bool):  # a bool is an int; JSON true is not a number here
        return Item(str(raw), None)
    if isinstance(raw, int | float | Decimal):
        return Item(_text(raw), _finite(raw))
    text = decode_bytes(bytes(raw)) if isinstance(raw, bytes | bytearray) else _text(raw)
    return Item(text, parse_number(text))


def decode_bytes(raw: bytes) -> str:
    """Bytes of an element pydicom could not type (UN, OB private tags) as text.

    UTF-8 first (covers ASCII), Latin-1 otherwise (never fails); the NUL and space padding
    DICOM adds is stripped, so ``b"efgre3d\\0"`` reads as ``efgre3d``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.strip("\0 ")


def _text(raw: object) -> str:
    # str() of pydicom values (PersonName in an odd character set...) may fail on bad input
    try:
        return str(raw)
    except _DECODE_ERRORS:
        return ""


def _finite(raw: int | float | Decimal) -> float | None:
    try:
        number = float(raw)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def element_value(dataset: Dataset, tag: int) -> Value | None:
    """The value of the top-level element ``tag`` of ``dataset``; None when it is absent."""
    try:
        if tag not in dataset.keys():  # a dict lookup; `in dataset` converts the tag first
            return None
        raw = dataset[tag].value
    except _DECODE_ERRORS as err:
        return Value(unreadable=f"unreadable ({type(err).__name__})")
    return value_of(raw)


# ------------------------------------------------------------------------------ tags


class TagSpecError(ValueError):
    """A ``tag`` (or tag-shaped ``value``) that is not one of the three forms."""


@dataclass(frozen=True)
class TagSpec:
    """Where a value is read from: a summary field or keyword, or an element by number.

    ``name`` is the one-element form (series-summary field first, then a DICOM keyword of the
    image, whose tag is ``keyword_tag``); otherwise ``tag`` is the element's number and
    ``index`` picks one item of a multi-valued element.
    """

    name: str | None = None
    keyword_tag: int | None = None
    tag: int | None = None
    index: int | None = None

    @cached_property
    def words(self) -> str:
        """E.g. ``SeriesDescription``, ``(0020,0037)[2] ImageOrientationPatient``."""
        if self.name is not None:
            return self.name
        tag = self.tag or 0
        text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        text += "" if self.index is None else f"[{self.index}]"
        keyword = keyword_for_tag(tag)
        return f"{text} {keyword}" if keyword else text


def parse_tag_spec(raw: object) -> TagSpec:
    """``[name]``, ``[group, element]`` or ``[group, element, index]``; else TagSpecError."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= 3:
        raise TagSpecError("expected [name], [group, element] or [group, element, index]")
    if len(raw) == 1:
        name = raw[0]
        if not isinstance(name, str) or not name:
            raise TagSpecError("a one-element tag is a summary field or DICOM keyword")
        keyword_tag = None if name == CLASSIFY_TYPE else tag_for_keyword(name)
        return TagSpec(name=name, keyword_tag=keyword_tag)
    group, element = _tag_number(raw[0], 0xFFFF), _tag_number(raw[1], 0xFFFF)
    index = _tag_number(raw[2], None) if len(raw) == 3 else None
    return TagSpec(tag=group << 16 | element, index=index)


def _tag_number(raw: object, maximum: int | None) -> int:
    # The original parsed each part with int(x, 0): "0x0008", "0x8", "8" and "0o10" all work.
    if isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
    elif isinstance(raw, str):
        try:
            number = int(raw.strip(), 0)
        except ValueError:
            raise TagSpecError(f"{raw!r} is not a number (write 0x.. for hex)") from None
    else:
        raise TagSpecError(f"{raw!r} is not a number string")
    if number < 0 or (maximum is not None and number > maximum):
        raise TagSpecError(f"{raw!r} is out of range")
    return number


@dataclass(frozen=True)
class Operands:
    """What conditions read for one image: its header, the series summary, the types so far."""

    dataset: Dataset
    summary: Mapping[str, object]
    types: list[str]  # the series' ClassifyType, growing while the image is classified
    # Elements already read for this image: references make rule files read the same few
    # elements (Manufacturer, ImageType) dozens of times per image.
    elements: dict[int, Value | None] = field(default_factory=dict)

    def element(self, tag: int) -> Value | None:
        """``element_value`` of this image's dataset, read once."""
        if tag not in self.elements:
            self.elements[tag] = element_value(self.dataset, tag)
        return self.elements[tag]


def resolve(spec: TagSpec, operands: Operands) -> Value | None:
    """The value ``spec`` reads for this image; None when it is absent."""
    if spec.name == CLASSIFY_TYPE:
        return value_of(operands.types)
    if spec.name is not None:
        found = operands.summary.get(spec.name)
        if found is not None:
            return value_of(found)
        return None if spec.keyword_tag is None else operands.element(spec.keyword_tag)
    value = operands.element(spec.tag or 0)
    if value is None or spec.index is None:
        return value
    return value.at(spec.index)


def raw_input(spec: TagSpec, dataset: Dataset, summary: Mapping[str, object]) -> Hashable:
    """What ``spec`` reads for this image, before any decoding, as a dictionary key.

    Two images with equal raw inputs (and equal character sets) resolve to equal values, which
    lets a classification be reused without converting any element: much cheaper than
    :func:`resolve`. Follows resolve()'s order: summary field, then keyword, then tag.
    """
    if spec.name is not None:
        found = summary.get(spec.name)
        if found is not None:
            return found if isinstance(found, str) else repr(found)
        tag = spec.keyword_tag
    else:
        tag = spec.tag
    if tag is None:
        return None
    element = dataset.get_item(tag)  # a raw element stays raw: no conversion
    if element is None:
        return None
    value = element.value
    return (element.VR, value if isinstance(value, str | bytes | int | float) else repr(value))


CHARSET = 0x00080005  # part of every raw key: the same bytes decode differently under another


# ------------------------------------------------------------------------------ conditions


@dataclass(frozen=True)
class Comparison:
    """A condition comparing a tag's value with an expected value (``value`` in the file).

    ``reference`` is set when the written value has the shape of a tag spec: the value it
    reads is used when present, ``literal`` otherwise (as in the original). ``pattern`` is the
    literal compiled once at load time, for ``regexp``. ``at`` locates it (``rules[2]``).
    """

    at: str
    tag: TagSpec
    operator: Operator
    literal: Value
    reference: TagSpec | None
    pattern: re.Pattern[str] | None
    approx_level: float
    negate: bool


@dataclass(frozen=True)
class ConditionFailure:
    """The first condition that did not hold, in words (for ``fiona classify --explain``).

    ``at`` locates it: ``rules[2]``, or through references ``rules[0] > rule MOSAIC >
    rules[1]``.
    """

    at: str
    tag: str
    operator: str
    expected: str
    actual: str
    negated: bool = False

    def __str__(self) -> str:
        condition = " ".join(x for x in (self.tag, self.operator, self.expected) if x)
        negation = "NOT " if self.negated else ""
        return f"{self.at}: wanted {negation}{condition}; actual: {self.actual}"


def comparison_failure(
    cmp: Comparison, operands: Operands, via: str = ""
) -> ConditionFailure | None:
    """None when ``cmp`` holds for this image, else what failed (``via``: references taken)."""
    actual = resolve(cmp.tag, operands)
    expected = cmp.literal
    if cmp.reference is not None:
        expected = resolve(cmp.reference, operands) or cmp.literal
    if holds(cmp.operator, actual, expected, cmp.pattern, cmp.approx_level) != cmp.negate:
        return None
    return ConditionFailure(
        at=f"{via}{cmp.at}",
        tag=cmp.tag.words,
        operator=cmp.operator.value,
        expected=_describe_expected(cmp, expected),
        actual="absent" if actual is None else actual.describe(),
        negated=cmp.negate,
    )


def _describe_expected(cmp: Comparison, expected: Value) -> str:
    if cmp.operator in PRESENCE_OPERATORS:
        return ""
    text = expected.describe()
    if cmp.reference is not None and expected is not cmp.literal:
        text += f" (from {cmp.reference.words})"
    if cmp.operator is Operator.APPROX:
        text += f" within {cmp.approx_level:g}"
    return text


# ------------------------------------------------------------------------------ operators


def holds(
    operator: Operator,
    actual: Value | None,
    expected: Value,
    pattern: re.Pattern[str] | None,
    approx_level: float,
) -> bool:
    """Whether ``actual`` (None: the tag is absent) satisfies the comparison, before negate."""
    if operator is Operator.EXIST:
        return actual is not None
    if operator is Operator.NOTEXIST:
        return actual is None
    if actual is None or actual.unreadable or expected.unreadable:
        return False  # a missing or uncomparable value fails every comparison
    if operator is Operator.REGEXP:
        return matches(actual, expected, pattern)
    if operator is Operator.CONTAINS:
        return contains(actual, expected)
    if operator is Operator.APPROX:
        return approx(actual, expected, approx_level)
    return compare_numbers(operator, actual, expected)


def matches(actual: Value, expected: Value, pattern: re.Pattern[str] | None) -> bool:
    """``regexp``: ``re.search`` of the pattern in the actual value's text."""
    compiled = pattern if pattern is not None else _compile(expected.text)
    return compiled is not None and compiled.search(actual.text) is not None


@lru_cache(maxsize=256)
def _compile(text: str) -> re.Pattern[str] | None:
    # Only patterns read through a tag reference get here: literals are compiled at load time.
    try:
        return re.compile(text)
    except re.error:
        return None


def contains(actual: Value, expected: Value) -> bool:
    """``contains``: membership in a list, substring of a single value."""
    if len(expected.items) != 1:
        return False
    needle = expected.items[0]
    if actual.multi:
        return any(_same(item, needle) for item in actual.items)
    return needle.text in actual.text


def _same(item: Item, needle: Item) -> bool:
    if item.text == needle.text:
        return True
    return item.number is not None and item.number == needle.number


def compare_numbers(operator: Operator, actual: Value, expected: Value) -> bool:
    """``==``, ``!=``, ``<``, ``>``: both sides must be one number each, otherwise False."""
    left, right = actual.single_number(), expected.single_number()
    if left is None or right is None:
        return False
    if operator is Operator.EQ:
        return left == right
    if operator is Operator.NE:
        return left != right
    if operator is Operator.LT:
        return left < right
    return left > right


def approx(actual: Value, expected: Value, level: float) -> bool:
    """``approx``: same number of items, every one numeric and within ``level`` of the other."""
    if not actual.items or len(actual.items) != len(expected.items):
        return False
    for have, want in zip(actual.items, expected.items, strict=True):
        if have.number is None or want.number is None or abs(have.number - want.number) > level:
            return False
    return True
