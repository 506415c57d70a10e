"""The classifier's rule engine against hostile rule files and hostile series values."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from fiona_common.errors import ConfigError
from services.classifier.rules import RuleFileError, RuleSet, classify_image
from tests.hostile.conftest import FUZZ_CASES, fuzz_settings

FUZZ = fuzz_settings(150)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
hostile_text = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["(", "[a-", "*", "\\", "(?P<x", "a{99999999999}", "\x00", "é^ü", "(?i"]),
    st.text(alphabet="()[]{}*+?|\\^$.", max_size=30),
)
tags = st.one_of(
    st.sampled_from(["SeriesDescription", "Modality", "ClassifyType", "NumFiles", "Nope"]),
    st.lists(st.sampled_from(["0x0008", "0x0070", "0x0008", "0xZZ", "-1", "0x10000"]), max_size=3),
    json_values,
)
conditions = (
    st.fixed_dictionaries(
        {"tag": tags},
        optional={
            "value": st.one_of(hostile_text, json_values),
            "operator": st.sampled_from(
                ["regexp", "contains", "==", "<", ">", "approx", "exist", "notexist", "bogus", 7]
            ),
            "negate": st.sampled_from(["yes", "no", True, 1, None]),
            "approxLevel": st.one_of(scalars),
        },
    )
    | st.fixed_dictionaries({"rule": st.one_of(st.sampled_from(["A", "B", ""]), scalars)})
    | json_values
)
definitions = (
    st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(["A", "B", "t"]), scalars)},
        optional={
            "id": st.one_of(st.sampled_from(["A", "B"]), scalars),
            "rules": st.lists(conditions, max_size=4) | json_values,
            "check": st.sampled_from(["SeriesLevel", "x", None]),
            "description": json_values,
        },
    )
    | json_values
)
rule_texts = st.one_of(
    st.lists(definitions, max_size=4).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=100),
)
summary_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=5),
    st.text(min_size=1, max_size=20).map(lambda s: s * 5000),
    st.binary(max_size=50),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
summaries = st.dictionaries(
    st.sampled_from(["SeriesDescription", "Modality", "NumFiles", "ClassifyType", "Manufacturer"]),
    summary_values,
)


@FUZZ
@given(text=rule_texts)
def test_a_hostile_rule_file_is_loaded_or_refused_with_a_config_error(text: str) -> None:
    FUZZ_CASES["rules: rule files"] += 1
    try:
        RuleSet.from_json(text, source="fuzz.json")
    except ConfigError as err:
        FUZZ_CASES["rules: rule files refused"] += 1
        assert "fuzz.json" in str(err)


def _dataset(values: dict[str, Any]) -> Dataset:
    ds = Dataset()
    ds.Manufacturer = "SIEMENS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.SeriesDescription = str(values.get("SeriesDescription", ""))[:64]
    return ds


@FUZZ
@given(text=rule_texts, summary=summaries, previous=st.lists(st.text(max_size=20), max_size=3))
def test_evaluation_never_raises_for_any_summary_values(
    text: str, summary: dict[str, Any], previous: list[str]
) -> None:
    rule_sets = [RuleSet.default()]
    try:
        rule_sets.append(RuleSet.from_json(text, source="fuzz.json"))
    except ConfigError:
        pass
    for rules in rule_sets:
        FUZZ_CASES["rules: evaluations"] += 1
        result = classify_image(rules, _dataset(summary), summary, previous)
        assert all(isinstance(t, str) for t in result.types)


def test_a_catastrophic_regular_expression_is_refused_at_load_time() -> None:
    # "(a+)+$" against 64 characters of "a" and a "!" backtracks for hours in Python's re.
    for pattern in ("^(a+)+$", "(a*)*b", "(?:x|(b+))*$", "((a+)b)+"):
        text = json.dumps(
            [{"type": "x", "rules": [{"tag": ["SeriesDescription"], "value": pattern}]}]
        )
        try:
            RuleSet.from_json(text, source="evil.json")
        except RuleFileError as err:
            assert err.field == "rules[0].value" and "repeat inside a repeat" in err.problem
        else:
            raise AssertionError(f"{pattern!r} was accepted")


@FUZZ
@given(pattern=st.text(alphabet="ab()+*?{}1,^$.!", max_size=14), value=st.text("ab!", max_size=64))
def test_any_accepted_pattern_finishes_quickly_on_a_long_hostile_value(
    pattern: str, value: str
) -> None:
    # Without "|": overlapping alternatives such as "(a|a)*$" are still exponential and not
    # detected at load time (only repeats inside repeats are).
    text = json.dumps([{"type": "x", "rules": [{"tag": ["SeriesDescription"], "value": pattern}]}])
    try:
        rules = RuleSet.from_json(text, source="fuzz.json")
    except ConfigError:
        return
    FUZZ_CASES["rules: evaluations"] += 1
    started = time.monotonic()
    classify_image(rules, Dataset(), {"SeriesDescription": value + "!"}, [])
    assert time.monotonic() - started < 1.0, pattern
