"""Conformance suite of the classification rule language (docs/classify-rules.md).

Every dataset is built here with pydicom; nothing is read from outside the repository.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from services.classifier.rules import (
    Classification,
    RuleFileError,
    RuleSet,
    classify_image,
)
from tests.builders import mr_dataset

AXIAL = [1, 0, 0, 0, 1, 0]
CORONAL = [1, 0, 0, 0, 0, -1]
SAGITTAL = [0, 1, 0, 0, 0, -1]
ABSENT = ["0x0018", "0x9087"]  # DiffusionBValue: never set by mr_dataset


def rules_of(*definitions: Mapping[str, Any]) -> RuleSet:
    return RuleSet.from_json(json.dumps(list(definitions)), source="test.json")


def classify(
    rules: RuleSet,
    ds: Dataset | None = None,
    summary: Mapping[str, object] | None = None,
    previous: Sequence[str] = (),
    failed: Sequence[str] = (),
) -> Classification:
    return classify_image(
        rules, ds if ds is not None else mr_dataset(), summary or {}, previous, failed
    )


def holds(
    condition: Mapping[str, Any],
    ds: Dataset | None = None,
    summary: Mapping[str, object] | None = None,
    previous: Sequence[str] = (),
) -> bool:
    """Whether a one-condition definition gives its type to this image."""
    rules = rules_of({"type": "T", "rules": [condition]})
    return "T" in classify(rules, ds, summary, previous).types


def load_error(*definitions: Any) -> RuleFileError:
    with pytest.raises(RuleFileError) as caught:
        RuleSet.from_json(json.dumps(list(definitions)), source="test.json")
    return caught.value


def with_private(ds: Dataset) -> Dataset:
    """``ds`` plus the private elements the original rule files read by number."""
    ds.add_new(0x00510010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0051100F, "LO", "HEA;HEP")
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x0019109C, "LO", "research/ABCD/muxepi2")
    return ds


# ------------------------------------------------------------------------------ operators


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"tag": ["SeriesDescription"], "value": "^T2 TSE"}, True),
        ({"tag": ["SeriesDescription"], "value": "^T1"}, False),
        ({"tag": ["SeriesDescription"], "value": "TSE", "operator": "regexp"}, True),
        ({"tag": ["0x0018", "0x0081"], "value": "^90"}, True),  # numbers as DICOM writes them
        ({"tag": ["0x0008", "0x0008"], "value": "^ORIGINAL\\\\PRIMARY\\\\M\\\\ND$"}, True),
        ({"tag": ["0x0008", "0x0008"], "value": "\\[|'"}, False),  # not Python's list repr
        ({"tag": ABSENT, "value": ".*"}, False),  # missing fails, even for a match-all
        ({"tag": ABSENT, "value": ".*", "negate": "yes"}, True),
    ],
)
def test_regexp_searches_the_values_text(condition: dict[str, Any], expected: bool) -> None:
    assert holds(condition) is expected


def test_regexp_sees_the_value_not_the_element_repr() -> None:
    # The original matched str(element) = "(0008,103E) Series Description  LO: 'T2...'".
    assert holds({"tag": ["SeriesDescription"], "value": "^T2 TSE axial$"}, summary={})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"tag": ["SeriesDescription"], "operator": "contains", "value": "TSE"}, True),
        ({"tag": ["SeriesDescription"], "operator": "contains", "value": "tse"}, False),
        ({"tag": ["0x0008", "0x0008"], "operator": "contains", "value": "PRIMARY"}, True),
        ({"tag": ["0x0008", "0x0008"], "operator": "contains", "value": "PRIM"}, False),
        ({"tag": ["0x0020", "0x0037"], "operator": "contains", "value": 1}, True),
        ({"tag": ABSENT, "operator": "contains", "value": ""}, False),
        ({"tag": ABSENT, "operator": "contains", "value": "x", "negate": "yes"}, True),
    ],
)
def test_contains_is_substring_for_strings_and_membership_for_lists(
    condition: dict[str, Any], expected: bool
) -> None:
    assert holds(condition) is expected


def test_contains_is_membership_in_classify_type() -> None:
    condition = {"tag": ["ClassifyType"], "operator": "contains", "value": "axial"}
    assert holds(condition, previous=["SIEMENS", "axial"])
    assert not holds(condition, previous=["SIEMENS", "axialish"])


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("==", 64, True),
        ("==", "64.0", True),
        ("==", 65, False),
        ("!=", 65, True),
        ("!=", "64", False),
        ("<", 65, True),
        ("<", 64, False),
        (">", 63, True),
        (">", "64", False),
    ],
)
def test_numeric_operators_compare_numbers(operator: str, value: object, expected: bool) -> None:
    assert holds({"tag": ["0x0028", "0x0010"], "operator": operator, "value": value}) is expected


@pytest.mark.parametrize("operator", ["==", "!=", "<", ">"])
def test_numeric_operators_fail_on_missing_and_non_numeric_values(operator: str) -> None:
    # The original let these pass silently; here they fail, and negate inverts that failure.
    assert not holds({"tag": ABSENT, "operator": operator, "value": 1})
    assert not holds({"tag": ["SeriesDescription"], "operator": operator, "value": 1})
    assert not holds({"tag": ["0x0020", "0x0037"], "operator": operator, "value": 1})  # 6 values
    assert holds({"tag": ABSENT, "operator": operator, "value": 1, "negate": "yes"})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"value": AXIAL}, True),
        ({"value": [0.99995, 0, 0, 0, 1, 0.00005]}, True),  # default level 1e-4
        ({"value": [0.999, 0, 0, 0, 1, 0]}, False),
        ({"value": [0.999, 0, 0, 0, 1, 0], "approxLevel": "0.0004"}, False),
        ({"value": [0.9997, 0, 0, 0, 1, 0], "approxLevel": "0.0004"}, True),
        ({"value": CORONAL}, False),
        ({"value": [1, 0, 0]}, False),  # unequal lengths fail (the original passed)
        ({"value": AXIAL + [0]}, False),
        ({"value": 1}, False),
    ],
)
def test_approx_compares_multivalue_orientation_item_by_item(
    condition: dict[str, Any], expected: bool
) -> None:
    condition = {"tag": ["0x0020", "0x0037"], "operator": "approx", **condition}
    assert holds(condition) is expected


def test_approx_on_scalars_and_on_what_is_not_a_number() -> None:
    assert holds({"tag": ["0x0018", "0x0081"], "operator": "approx", "value": 90.00001})
    assert holds({"tag": ["EchoTime"], "operator": "approx", "value": "89.5", "approxLevel": 1})
    assert not holds({"tag": ["0x0018", "0x0081"], "operator": "approx", "value": 91})
    assert not holds({"tag": ["0x0008", "0x0008"], "operator": "approx", "value": [1, 2, 3, 4]})
    assert not holds({"tag": ABSENT, "operator": "approx", "value": 0})


@pytest.mark.parametrize(
    ("tag", "exists"),
    [
        (["SeriesDescription"], True),
        (["0x0018", "0x0022"], True),  # ScanOptions is present, if empty
        (ABSENT, False),
        (["0x0051", "0x100F"], False),
        (["NoSuchFieldOrKeyword"], False),
        (["0x0020", "0x0037", "5"], True),
        (["0x0020", "0x0037", "6"], False),  # past the last value
    ],
)
def test_exist_and_notexist(tag: list[str], exists: bool) -> None:
    assert holds({"tag": tag, "operator": "exist"}) is exists
    assert holds({"tag": tag, "operator": "notexist"}) is not exists
    assert holds({"tag": tag, "operator": "exist", "negate": "yes"}) is not exists
    assert holds({"tag": tag, "operator": "notexist", "value": "ignored"}) is not exists


def test_negate_yes_and_no() -> None:
    condition = {"tag": ["SeriesDescription"], "value": "TSE"}
    assert not holds({**condition, "negate": "yes"})
    assert holds({**condition, "negate": "no"})


# ------------------------------------------------------------------------------ tags and values


def test_one_element_tag_reads_the_summary_before_the_dataset() -> None:
    condition = {"tag": ["SeriesDescription"], "value": "^from summary$"}
    assert holds(condition, summary={"SeriesDescription": "from summary"})
    assert not holds(condition, summary={})  # the dataset's own "T2 TSE axial"


def test_one_element_tag_reads_summary_only_fields() -> None:
    condition = {"tag": ["NumSlices"], "operator": "==", "value": "81"}
    assert holds(condition, summary={"NumSlices": "81"})
    assert not holds(condition, summary={"NumSlices": "80"})
    assert not holds(condition, summary={})


def test_classify_type_reads_the_types_so_far_not_the_summary_copy() -> None:
    condition = {"tag": ["ClassifyType"], "operator": "contains", "value": "axial"}
    assert holds(condition, summary={"ClassifyType": []}, previous=["axial"])
    assert not holds(condition, summary={"ClassifyType": ["axial"]}, previous=[])


@pytest.mark.parametrize(
    "tag",
    [["0x08", "0x70"], ["0x0008", "0x0070"], ["8", "112"], ["0X8", "0X70"], [8, 112]],
)
def test_group_element_forms(tag: list[object]) -> None:
    assert holds({"tag": tag, "value": "^FIONA Test$"})


def test_index_picks_one_value_of_a_multivalued_element() -> None:
    ds = mr_dataset(ImageOrientationPatient=["1", "0", "0", "0", "0.5", "-0.8"])
    assert holds({"tag": ["0x20", "0x37", "4"], "operator": "==", "value": 0.5}, ds)
    assert holds({"tag": ["0x20", "0x37", "5"], "operator": "<", "value": 0}, ds)
    assert holds({"tag": ["0x08", "0x08", "0"], "value": "^ORIGINAL$"}, ds)
    assert holds({"tag": ["0x08", "0x70", "0"], "value": "^FIONA Test$"}, ds)  # single value
    assert not holds({"tag": ["0x08", "0x70", "1"], "operator": "exist"}, ds)


def test_private_tags_given_as_strings() -> None:
    ds = with_private(mr_dataset())
    assert holds({"tag": ["0x51", "0x100F"], "operator": "contains", "value": "HEA;HEP"}, ds)
    assert holds({"tag": ["0x51", "0x100f"], "operator": "contains", "value": "HEA"}, ds)
    assert holds({"tag": ["0x19", "0x109c"], "value": "^research/.*/muxepi2"}, ds)
    assert holds({"tag": ["0x0051", "0x100F"], "operator": "exist"}, ds)


def test_private_tags_pydicom_cannot_type_are_read_as_text() -> None:
    ds = mr_dataset()
    ds.add_new(0x0019109C, "UN", b"efgre3d\0")
    ds.add_new(0x00431039, "UN", b"1000\\8\\0\\0 ")
    assert holds({"tag": ["0x19", "0x109c"], "value": "^efgre3d$"}, ds)
    assert holds({"tag": ["0x19", "0x109c"], "operator": "contains", "value": "gre"}, ds)
    assert holds({"tag": ["0x43", "0x1039"], "value": "^1000\\\\8"}, ds)


def test_value_as_tag_reference_compares_two_tags() -> None:
    same = {"tag": ["0x0028", "0x0010"], "operator": "==", "value": ["0x0028", "0x0011"]}
    assert holds(same, mr_dataset(rows=64, cols=64))
    assert not holds(same, mr_dataset(rows=64, cols=32))
    by_name = {"tag": ["Rows"], "operator": ">", "value": ["Columns"]}
    assert holds(by_name, mr_dataset(rows=64, cols=32))
    orientation = {"tag": ["0x20", "0x37"], "operator": "approx", "value": ["0x20", "0x37"]}
    assert holds(orientation)


def test_value_reference_reads_summary_fields_too() -> None:
    condition = {"tag": ["SeriesDescription"], "value": ["EchoTime"], "operator": "contains"}
    assert holds(condition, summary={"SeriesDescription": "TE 90.0", "EchoTime": "90.0"})
    assert not holds(condition, summary={"SeriesDescription": "TE 90.0", "EchoTime": "30"})


def test_value_reference_that_is_absent_falls_back_to_the_literal() -> None:
    # ["T2"] is shaped like a one-element tag, but no summary field or keyword is called T2
    assert holds({"tag": ["SeriesDescription"], "value": ["T2"]})
    assert not holds({"tag": ["SeriesDescription"], "value": ["T1"]})
    # absent reference for a numeric operator: the literal is no number, so it fails
    assert not holds({"tag": ["Rows"], "operator": "==", "value": ["0x0018", "0x9087"]})


# ------------------------------------------------------------------------------ references


REFERENCED = [
    {"type": "SIEMENS", "id": "SIEMENS", "rules": [{"tag": ["0x08", "0x70"], "value": "^SIEMENS"}]},
    {
        "type": "mosaic",
        "id": "MOSAIC",
        "rules": [
            {"rule": "SIEMENS"},
            {"tag": ["0x08", "0x08"], "operator": "contains", "value": "MOSAIC"},
        ],
    },
]


def types_with(condition: Mapping[str, Any], ds: Dataset) -> list[str]:
    rules = rules_of(*REFERENCED, {"type": "T", "rules": [condition]})
    return classify(rules, ds).types


def test_rule_holds_when_the_referenced_definition_holds() -> None:
    siemens = mr_dataset(Manufacturer="SIEMENS")
    assert "T" in types_with({"rule": "SIEMENS"}, siemens)
    assert "T" not in types_with({"rule": "SIEMENS"}, mr_dataset())


def test_nested_references_are_evaluated_recursively() -> None:
    mosaic = mr_dataset(Manufacturer="SIEMENS", ImageType=["ORIGINAL", "PRIMARY", "MOSAIC"])
    assert "T" in types_with({"rule": "MOSAIC"}, mosaic)
    not_siemens = mr_dataset(ImageType=["ORIGINAL", "PRIMARY", "MOSAIC"])
    rules = rules_of(*REFERENCED, {"type": "T", "rules": [{"rule": "MOSAIC"}]})
    trace = classify(rules, not_siemens).trace[2]
    assert not trace.matched
    assert trace.failure is not None
    assert trace.failure.at == "rules[0] > rule MOSAIC > rules[0] > rule SIEMENS > rules[0]"


def test_notrule_is_the_negation_of_the_whole_definition() -> None:
    # Siemens but not mosaic: MOSAIC does not hold, so "notrule MOSAIC" holds. The original
    # negated each condition (NOT Siemens AND NOT mosaic) and would have refused this image.
    siemens_plain = mr_dataset(Manufacturer="SIEMENS")
    assert "T" in types_with({"notrule": "MOSAIC"}, siemens_plain)
    mosaic = mr_dataset(Manufacturer="SIEMENS", ImageType=["ORIGINAL", "MOSAIC"])
    assert "T" not in types_with({"notrule": "MOSAIC"}, mosaic)
    assert "T" in types_with({"notrule": "MOSAIC"}, mr_dataset())


def test_rule_with_negate_equals_notrule_and_notrule_with_negate_equals_rule() -> None:
    siemens = mr_dataset(Manufacturer="SIEMENS")
    assert "T" not in types_with({"rule": "SIEMENS", "negate": "yes"}, siemens)
    assert "T" in types_with({"notrule": "SIEMENS", "negate": "yes"}, siemens)


def test_referenced_definitions_still_give_their_own_type() -> None:
    mosaic = mr_dataset(Manufacturer="SIEMENS", ImageType=["ORIGINAL", "MOSAIC"])
    assert types_with({"rule": "MOSAIC"}, mosaic) == ["SIEMENS", "mosaic", "T"]


# ------------------------------------------------------------------------------ SeriesLevel


SERIES_LEVEL_AXIAL = {
    "type": "all-axial",
    "check": "SeriesLevel",
    "rules": [{"tag": ["0x20", "0x37"], "operator": "approx", "value": AXIAL}],
}


def run_series(rules: RuleSet, datasets: Sequence[Dataset]) -> list[Classification]:
    """Classify images one after the other as the service does, carrying the state."""
    results: list[Classification] = []
    types: list[str] = []
    failed: frozenset[str] = frozenset()
    for ds in datasets:
        result = classify(rules, ds, {}, types, sorted(failed))
        types, failed = result.types, result.series_level_failed
        results.append(result)
    return results


def oriented(orientation: list[int], n: int = 1) -> Dataset:
    return mr_dataset(ImageOrientationPatient=[str(x) for x in orientation], instance_number=n)


def test_series_level_type_holds_while_every_image_holds() -> None:
    results = run_series(rules_of(SERIES_LEVEL_AXIAL), [oriented(AXIAL, n) for n in (1, 2, 3)])
    assert [r.types for r in results] == [["all-axial"]] * 3
    assert results[-1].series_level_failed == frozenset()


def test_series_level_type_fails_on_one_image_and_stays_removed() -> None:
    images = [oriented(AXIAL, 1), oriented(SAGITTAL, 2), oriented(AXIAL, 3)]
    results = run_series(rules_of(SERIES_LEVEL_AXIAL), images)
    assert [r.types for r in results] == [["all-axial"], [], []]
    assert results[1].series_level_failed == {"all-axial"}
    assert results[2].series_level_failed == {"all-axial"}
    assert results[1].trace[0].note is not None and "out for the rest" in results[1].trace[0].note
    assert results[2].trace[0].matched  # the image holds, but the series no longer can
    assert "earlier image" in results[2].trace[0].reason


def test_series_level_type_failing_on_the_first_image_is_never_added() -> None:
    images = [oriented(SAGITTAL, 1), oriented(AXIAL, 2)]
    results = run_series(rules_of(SERIES_LEVEL_AXIAL), images)
    assert [r.types for r in results] == [[], []]


def test_series_level_definitions_of_one_type_are_alternatives() -> None:
    either = {**SERIES_LEVEL_AXIAL, "type": "straight"}
    coronal = {
        "type": "straight",
        "check": "SeriesLevel",
        "rules": [{"tag": ["0x20", "0x37"], "operator": "approx", "value": CORONAL}],
    }
    results = run_series(rules_of(either, coronal), [oriented(AXIAL), oriented(CORONAL)])
    assert results[-1].types == ["straight"]
    results = run_series(rules_of(either, coronal), [oriented(AXIAL), oriented(SAGITTAL)])
    assert results[-1].types == []


def test_other_types_accumulate_over_images() -> None:
    orientation_rules = [
        {"type": name, "rules": [{"tag": ["0x20", "0x37"], "operator": "approx", "value": v}]}
        for name, v in (("axial", AXIAL), ("sagittal", SAGITTAL))
    ]
    results = run_series(rules_of(*orientation_rules), [oriented(AXIAL), oriented(SAGITTAL)])
    assert results[-1].types == ["axial", "sagittal"]


def test_same_image_twice_changes_nothing() -> None:
    rules = rules_of(
        SERIES_LEVEL_AXIAL, {"type": "T2", "rules": [{"tag": ["SeriesDescription"], "value": "T2"}]}
    )
    first = classify(rules, oriented(AXIAL))
    again = classify(
        rules, oriented(AXIAL), previous=first.types, failed=sorted(first.series_level_failed)
    )
    assert (again.types, again.series_level_failed) == (first.types, first.series_level_failed)


def test_remembered_outcomes_follow_every_input_the_rules_read() -> None:
    # One RuleSet for all calls: outcomes it remembers must never answer for other inputs.
    rules = rules_of(
        {"id": "AX", "type": "axial", "rules": [ORIENTATIONS[0]["rules"][0]]},
        {"type": "T2", "rules": [{"tag": ["SeriesDescription"], "value": "T2"}]},
        {"type": "thin", "rules": [{"tag": ["SliceThickness"], "operator": "<", "value": 2}]},
        {"type": "not-axial", "rules": [{"notrule": "AX"}]},
    )
    thin, thick = oriented(AXIAL), oriented(CORONAL)
    thin.SliceThickness, thick.SliceThickness = "1", "3"
    for _ in range(2):
        assert classify(rules, thin).types == ["axial", "T2", "thin"]
        assert classify(rules, thick).types == ["T2", "not-axial"]
        assert classify(rules, thin, summary={"SliceThickness": "5"}).types == ["axial", "T2"]
        assert classify(rules, thick, previous=["x"]).types == ["x", "T2", "not-axial"]
        assert classify(rules, thick, previous=["T2"], failed=["T2"]).types == ["not-axial"]
    assert len(rules.outcomes) == 5


# ------------------------------------------------------------------------------ derived types


ORIENTATIONS = [
    {"type": name, "rules": [{"tag": ["0x20", "0x37"], "operator": "approx", "value": v}]}
    for name, v in (("axial", AXIAL), ("coronal", CORONAL), ("sagittal", SAGITTAL))
]
LOCALIZER = {
    "type": "localizer",
    "rules": [
        {"tag": ["ClassifyType"], "operator": "contains", "value": name}
        for name in ("axial", "coronal", "sagittal")
    ],
}


def test_localizer_is_derived_from_three_orientations() -> None:
    images = [oriented(AXIAL, 1), oriented(CORONAL, 2), oriented(SAGITTAL, 3)]
    results = run_series(rules_of(*ORIENTATIONS, LOCALIZER), images)
    assert "localizer" not in results[1].types
    assert results[2].types == ["axial", "coronal", "sagittal", "localizer"]


def test_a_derived_definition_before_its_inputs_sees_them_from_the_next_image() -> None:
    images = [oriented(AXIAL, 1), oriented(CORONAL, 2), oriented(SAGITTAL, 3), oriented(AXIAL, 4)]
    results = run_series(rules_of(LOCALIZER, *ORIENTATIONS), images)
    assert "localizer" not in results[2].types
    assert "localizer" in results[3].types


def test_a_single_orientation_series_is_no_localizer() -> None:
    results = run_series(
        rules_of(*ORIENTATIONS, LOCALIZER), [oriented(AXIAL, n) for n in (1, 2, 3)]
    )
    assert results[-1].types == ["axial"]


# ------------------------------------------------------------------------------ traces


def test_trace_describes_the_first_failing_condition_in_words() -> None:
    rules = rules_of(
        {
            "type": "big",
            "id": "BIG",
            "rules": [
                {"tag": ["0x08", "0x70"], "value": "FIONA"},
                {"tag": ["0x28", "0x10"], "operator": "==", "value": "256"},
                {"tag": ABSENT, "operator": "exist"},
            ],
        }
    )
    trace = classify(rules).trace[0]
    assert (trace.index, trace.type, trace.id, trace.matched) == (0, "big", "BIG", False)
    failure = trace.failure
    assert failure is not None
    assert (failure.at, failure.tag, failure.operator) == ("rules[1]", "(0028,0010) Rows", "==")
    assert (failure.expected, failure.actual) == ("'256'", "'64'")
    assert trace.reason == "rules[1]: wanted (0028,0010) Rows == '256'; actual: '64'"


def test_trace_of_a_notrule_and_of_a_missing_tag() -> None:
    rules = rules_of(
        *REFERENCED,
        {"type": "T", "rules": [{"notrule": "SIEMENS"}]},
        {"type": "U", "rules": [{"tag": ABSENT, "operator": ">", "value": 0}]},
    )
    trace = classify(rules, mr_dataset(Manufacturer="SIEMENS")).trace
    assert trace[2].reason == "rules[0]: wanted NOT definition SIEMENS holds; actual: it holds"
    assert trace[3].failure is not None and trace[3].failure.actual == "absent"
    assert [t.matched for t in trace] == [True, False, False, False]


def test_trace_shows_multiple_values_as_dicom_writes_them() -> None:
    rules = rules_of(
        {"type": "T", "rules": [{"tag": ["0x08", "0x08"], "operator": "contains", "value": "X"}]},
        {"type": "U", "rules": [{"tag": ["0x20", "0x37"], "operator": "approx", "value": CORONAL}]},
    )
    trace = classify(rules).trace
    assert trace[0].failure is not None
    assert trace[0].failure.actual == "'ORIGINAL\\PRIMARY\\M\\ND'"
    assert trace[1].reason == (
        "rules[0]: wanted (0020,0037) ImageOrientationPatient approx '1\\0\\0\\0\\0\\-1' "
        "within 0.0001; actual: '1\\0\\0\\0\\1\\0'"
    )


# ------------------------------------------------------------------------------ odd content


def odd_dataset() -> Dataset:
    ds = mr_dataset()
    ds.ReferencedImageSequence = [Dataset(), Dataset()]
    ds.ScanOptions = ""
    ds.ImageType = []
    ds.EchoTime = None
    ds.add_new(0x00291010, "OB", b"SV10\x04\x03\x02\x01\xff\x00")
    ds.add_new(0x00431039, "UN", b"\xff\xfe\x80 junk")
    ds.PatientName = "Name^With^Odd=\\"
    # an element whose bytes do not fit its VR: converting it raises in pydicom
    raw = RawDataElement(Tag(0x00280011), "US", 3, b"abc", 0, True, True)
    ds._dict[Tag(0x00280011)] = raw
    return ds


ODD_TAGS = [
    ["0x0008", "0x1140"],
    ["ReferencedImageSequence"],
    ["0x0008", "0x1140", "1"],
    ["0x0018", "0x0022"],
    ["0x0008", "0x0008"],
    ["0x0008", "0x0008", "3"],
    ["0x0018", "0x0081"],
    ["0x0029", "0x1010"],
    ["0x0043", "0x1039"],
    ["PatientName"],
    ["0x0028", "0x0011"],
    ["Columns"],
    ["Odd"],
    ["Mapping"],
]
ODD_CONDITIONS = [
    {"operator": "regexp", "value": "."},
    {"operator": "contains", "value": "x"},
    {"operator": "==", "value": 0},
    {"operator": "!=", "value": 0},
    {"operator": "<", "value": 1e9},
    {"operator": ">", "value": -1e9},
    {"operator": "approx", "value": [0, 0]},
    {"operator": "exist"},
    {"operator": "notexist"},
    {"operator": "==", "value": ["0x0028", "0x0011"]},
    {"operator": "regexp", "value": ["PatientName"]},  # "Name^With^Odd=\" is no regexp
]


@pytest.mark.parametrize("tag", ODD_TAGS, ids=lambda tag: "-".join(map(str, tag)))
def test_evaluation_never_raises_on_odd_content(tag: list[str]) -> None:
    rules = rules_of(
        *({"type": f"T{i}", "rules": [{"tag": tag, **c}]} for i, c in enumerate(ODD_CONDITIONS)),
        *(
            {"type": f"N{i}", "rules": [{"tag": tag, **c, "negate": "yes"}]}
            for i, c in enumerate(ODD_CONDITIONS)
        ),
    )
    summary = {"Odd": [None, {"a": 1}, b"\xff", 1e400, True], "Mapping": {"a": "b"}}
    result = classify(rules, odd_dataset(), summary)
    assert len(result.trace) == 2 * len(ODD_CONDITIONS)


def test_odd_content_is_present_but_not_comparable() -> None:
    ds = odd_dataset()
    assert holds({"tag": ["0x0028", "0x0011"], "operator": "exist"}, ds)
    assert not holds({"tag": ["0x0028", "0x0011"], "operator": "==", "value": 0}, ds)
    assert holds({"tag": ["ReferencedImageSequence"], "operator": "exist"}, ds)
    assert not holds({"tag": ["ReferencedImageSequence"], "value": ".*"}, ds)
    assert holds({"tag": ["0x0018", "0x0022"], "value": "^$"}, ds)  # empty string
    assert not holds({"tag": ["0x0018", "0x0081"], "operator": "<", "value": 1e9}, ds)  # empty


# ------------------------------------------------------------------------------ load errors


def test_unknown_reference_names_the_rule_and_the_field() -> None:
    err = load_error(
        {"type": "A", "rules": []},
        {
            "type": "mosaic",
            "id": "MOSAIC",
            "rules": [{"tag": ["Rows"], "value": "1"}, {"rule": "SIEMENZ"}],
        },
    )
    assert (err.index, err.definition_id, err.definition_type) == (1, "MOSAIC", "mosaic")
    assert err.field == "rules[1].rule"
    assert str(err) == (
        "rule file test.json, definition [1] (id 'MOSAIC', type 'mosaic'), field rules[1].rule: "
        "no definition has the id 'SIEMENZ'"
    )


def test_unknown_operator_names_the_rule_and_the_field() -> None:
    err = load_error({"type": "T2", "rules": [{"tag": ["Rows"], "operator": "~=", "value": "1"}]})
    assert err.index == 0 and err.definition_type == "T2" and err.field == "rules[0].operator"
    assert "unknown operator '~='" in str(err) and "notexist" in str(err)


@pytest.mark.parametrize(
    "definitions",
    [
        [{"type": "A", "id": "A", "rules": [{"rule": "A"}]}],
        [
            {"type": "A", "id": "A", "rules": [{"rule": "B"}]},
            {"type": "B", "id": "B", "rules": [{"notrule": "A"}]},
        ],
        [
            {"type": "A", "id": "A", "rules": [{"rule": "B"}]},
            {"type": "B", "id": "B", "rules": [{"rule": "C"}]},
            {"type": "C", "id": "C", "rules": [{"tag": ["Rows"], "value": "1"}, {"rule": "B"}]},
        ],
    ],
)
def test_reference_cycles_are_load_errors(definitions: list[dict[str, Any]]) -> None:
    err = load_error(*definitions)
    assert "references loop" in str(err) and err.index == 0 and err.definition_id == "A"


def test_repeated_ids_load_but_cannot_be_referenced() -> None:
    twice = [
        {"type": "ABCD-DTI", "id": "GEDTI", "rules": [{"tag": ["Rows"], "value": "1"}]},
        {"type": "ABCD-DTI", "id": "GEDTI", "rules": [{"tag": ["Rows"], "value": "2"}]},
    ]
    assert len(rules_of(*twice).definitions) == 2
    err = load_error(*twice, {"type": "X", "rules": [{"rule": "GEDTI"}]})
    assert "ambiguous" in str(err) and "[0], [1]" in str(err) and err.field == "rules[0].rule"


@pytest.mark.parametrize(
    ("condition", "field", "words"),
    [
        ({"tag": ["Rows"], "operator": "==", "value": "abc"}, "rules[0].value", "compares numbers"),
        ({"tag": ["Rows"], "operator": ">", "value": [1, 2]}, "rules[0].value", "not a list"),
        ({"tag": ["Rows"], "operator": "<", "value": True}, "rules[0].value", "a string, a number"),
        (
            {"tag": ["Rows"], "operator": "approx", "value": ["a", "b", "c", "d"]},
            "rules[0].value",
            "approx",
        ),
        (
            {"tag": ["Rows"], "operator": "approx", "value": 1, "approxLevel": "x"},
            "rules[0].approxLevel",
            "non-negative",
        ),
        (
            {"tag": ["Rows"], "operator": "approx", "value": 1, "approxLevel": -1},
            "rules[0].approxLevel",
            "non-negative",
        ),
        ({"tag": ["Rows"], "operator": "=="}, "rules[0].value", "required"),
        ({"tag": ["Rows"], "value": "(unclosed"}, "rules[0].value", "not a regular expression"),
        ({"tag": ["Rows"], "value": {"a": 1}}, "rules[0].value", "a string, a number"),
        ({"tag": ["0xZZ", "0x10"], "value": "1"}, "rules[0].tag", "not a number"),
        ({"tag": ["0x10000", "0x10"], "value": "1"}, "rules[0].tag", "out of range"),
        ({"tag": ["0x10", "0x10", "-1"], "value": "1"}, "rules[0].tag", "out of range"),
        ({"tag": [], "value": "1"}, "rules[0].tag", "expected [name]"),
        ({"tag": ["1", "2", "3", "4"], "value": "1"}, "rules[0].tag", "expected [name]"),
        ({"tag": "Manufacturer", "value": "1"}, "rules[0].tag", "expected [name]"),
        ({"tag": [""], "value": "1"}, "rules[0].tag", "summary field or DICOM keyword"),
        ({"value": "1"}, "rules[0].tag", "required"),
        ({"tag": ["Rows"], "value": "1", "negate": "Yes"}, "rules[0].negate", '"yes"'),
        ({"tag": ["Rows"], "value": "1", "negat": "yes"}, "rules[0].negat", "unknown key"),
        ({"rule": "X", "tag": ["Rows"]}, "rules[0].tag", "stands alone"),
        ({"rule": "X", "notrule": "Y"}, "rules[0].notrule", "stands alone"),
        ({"rule": ""}, "rules[0].rule", "id of another definition"),
        ("Rows", "rules[0]", "JSON object"),
    ],
)
def test_broken_conditions_are_load_errors(condition: object, field: str, words: str) -> None:
    err = load_error({"type": "T", "id": "TID", "rules": [condition]})
    assert err.field == field and words in err.problem
    assert str(err).startswith("rule file test.json, definition [0] (id 'TID', type 'T'), field ")


@pytest.mark.parametrize(
    ("definition", "field", "words"),
    [
        ({"rules": []}, "type", "required"),
        ({"type": "", "rules": []}, "type", "required"),
        ({"type": 3, "rules": []}, "type", "required"),
        ({"type": "T"}, "rules", "required"),
        ({"type": "T", "rules": {}}, "rules", "required"),
        ({"type": "T", "id": 5, "rules": []}, "id", "non-empty string"),
        ({"type": "T", "check": "Serieslevel", "rules": []}, "check", "not a check"),
        ({"type": "T", "chek": "SeriesLevel", "rules": []}, "chek", "unknown key"),
        ({"type": "T", "description": ["x"], "rules": []}, "description", "string"),
    ],
)
def test_broken_definitions_are_load_errors(
    definition: dict[str, Any], field: str, words: str
) -> None:
    err = load_error({"type": "ok", "rules": []}, definition)
    assert err.index == 1 and err.field == field and words in err.problem


def test_definitions_of_one_type_must_agree_on_series_level() -> None:
    err = load_error(SERIES_LEVEL_AXIAL, {"type": "all-axial", "rules": []})
    assert err.index == 1 and err.field == "check" and "[0]" in err.problem


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[{"type": "T", "rules": []},]', "not valid JSON"),
        ('{"type": "T", "rules": []}', "JSON array"),
        ("", "not valid JSON"),
        ("[3]", "definition [0]"),
    ],
)
def test_broken_files_are_load_errors(text: str, words: str) -> None:
    with pytest.raises(RuleFileError, match=r"^rule file x\.json") as caught:
        RuleSet.from_json(text, source="x.json")
    assert words in str(caught.value)


def test_load_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "classifyRules.json"
    path.write_text(json.dumps([{"type": "T", "rules": []}]))
    rules = RuleSet.load(path)
    assert rules.source == str(path) and rules.definitions[0].type == "T"
    with pytest.raises(RuleFileError, match="cannot be read"):
        RuleSet.load(tmp_path / "missing.json")


def test_a_definition_without_conditions_always_holds() -> None:
    assert classify(rules_of({"type": "everything", "rules": []})).types == ["everything"]


# ------------------------------------------------------------------------------ original files


# Every construct the two original rule files (FIONASITE classifyRules.json, the MMIV template)
# use, written the way they write it: hex strings of any width and case, private tags,
# summary fields, string numbers, list values, approxLevel as a string, repeated ids,
# "negate": "yes", references, derived ClassifyType rules, a contains value that is no regexp.
ORIGINAL_STYLE = [
    {
        "type": "GE",
        "id": "GEBYMANUFACTURER",
        "description": "GE",
        "rules": [{"tag": ["0x08", "0x70"], "value": "^GE MEDICAL"}],
    },
    {
        "type": "SIEMENS",
        "id": "SIEMENSBYMANUFACTURER",
        "description": "Siemens",
        "rules": [{"tag": ["0x08", "0x70"], "value": "^SIEMENS"}],
    },
    {
        "type": "mosaic",
        "description": "Siemens Mosaic format",
        "id": "MOSAIC",
        "rules": [
            {"tag": ["0x08", "0x08"], "value": "MOSAIC", "operator": "contains"},
            {"rule": "SIEMENSBYMANUFACTURER"},
        ],
    },
    {
        "type": "original",
        "description": "original",
        "id": "ORIGINAL",
        "rules": [{"tag": ["0x08", "0x08"], "value": "ORIGINAL", "operator": "contains"}],
    },
    {
        "type": "localizer",
        "description": "three orientations seen before",
        "rules": [
            {"tag": ["ClassifyType"], "value": "axial", "operator": "contains"},
            {"tag": ["ClassifyType"], "value": "coronal", "operator": "contains"},
            {"tag": ["ClassifyType"], "value": "sagittal", "operator": "contains"},
        ],
    },
    {
        "type": "ABCD-DTI",
        "description": "Siemens ABCD DTI",
        "rules": [
            {"rule": "SIEMENSBYMANUFACTURER"},
            {"rule": "ORIGINAL"},
            {"rule": "MOSAIC"},
            {"tag": ["0x28", "0x10"], "operator": "==", "value": "1260"},
            {"tag": ["AcquisitionMatrix"], "value": "140, 0, 0, 140"},
            {"tag": ["0x18", "0x89"], "operator": "==", "value": "105"},
            {"tag": ["0x18", "0x24"], "value": "ep_b"},
            {"tag": ["NumSlices"], "value": "81"},
            {
                "tag": ["SeriesDescription"],
                "operator": "contains",
                "negate": "yes",
                "value": "_QA_dMRI",
            },
        ],
    },
    {
        "type": "Coil Error",
        "description": "no head coil",
        "rules": [
            {"rule": "SIEMENSBYMANUFACTURER"},
            {"rule": "ORIGINAL"},
            {"tag": ["0x51", "0x100f"], "operator": "contains", "negate": "yes", "value": "BC"},
            {
                "tag": ["0x51", "0x100f"],
                "operator": "contains",
                "negate": "yes",
                "value": "HEA;HEP",
            },
            {"tag": ["0x51", "0x100f"], "operator": "contains", "negate": "yes", "value": "HC1-7"},
        ],
    },
    {
        "type": "ABCD-rsfMRI",
        "description": "fMRI with time series",
        "rules": [
            {"rule": "SIEMENSBYMANUFACTURER"},
            {"tag": ["0x20", "0x105"], "operator": ">", "value": "1"},
            {"tag": ["NumSlices"], "operator": "==", "negate": "yes", "value": "1"},
            {"tag": ["AcquisitionLength"], "value": "TA 05:11"},
        ],
    },
    {
        "type": "ABCD-DTI",
        "id": "GEDTI",
        "description": "GE DTI",
        "rules": [
            {"rule": "GEBYMANUFACTURER"},
            {"tag": ["0x19", "0x109c"], "value": "^research/.*/muxepi2"},
            {"tag": ["AcquisitionMatrix"], "value": "140, 0, 0, 140"},
            {"tag": ["ImagesInAcquisition"], "value": "2916"},
        ],
    },
    {
        "type": "ABCD-DTI",
        "id": "GEDTI",
        "description": "GE DTI, other software",
        "rules": [
            {"rule": "GEBYMANUFACTURER"},
            {"tag": ["0x19", "0x109c"], "value": "^research/.*/muxepi2"},
            {"tag": ["ImagesInAcquisition"], "value": "8424"},
            {"tag": ["SeriesDescription"], "operator": "contains", "value": "ORIG"},
        ],
    },
    {
        "type": "DIFFUSION",
        "id": "DIFFUSION",
        "description": "SIEMENS diffusion weighted",
        "rules": [
            {"tag": ["SequenceName"], "value": "*ep_b", "operator": "contains"},
            {"rule": "SIEMENSBYMANUFACTURER"},
        ],
    },
    {
        "type": "sagittal",
        "id": "ORIENTATIONSAG",
        "description": "sagittal",
        "rules": [{"tag": ["0x20", "0x37"], "value": [0, 1, 0, 0, 0, -1], "operator": "approx"}],
    },
    {
        "type": "axial",
        "id": "ORIENTATIONAX",
        "description": "axial",
        "rules": [
            {
                "tag": ["0x20", "0x37"],
                "value": [1, 0, 0, 0, 1, 0],
                "operator": "approx",
                "approxLevel": "0.0004",
            }
        ],
    },
    {
        "type": "coronal",
        "id": "ORIENTATIONCOR",
        "description": "coronal",
        "rules": [{"tag": ["0x20", "0x37"], "value": [1, 0, 0, 0, 0, -1], "operator": "approx"}],
    },
]


def siemens_dti(n: int = 1) -> tuple[Dataset, dict[str, object]]:
    ds = with_private(
        mr_dataset(
            Manufacturer="SIEMENS",
            ImageType=["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "MOSAIC"],
            Rows=1260,
            Columns=1260,
            NumberOfPhaseEncodingSteps=105,
            SequenceName="*ep_b1000#1",
            SeriesDescription="ABCD_dMRI",
            instance_number=n,
        )
    )
    summary = {
        "Manufacturer": "SIEMENS",
        "AcquisitionMatrix": "[140, 0, 0, 140]",
        "NumSlices": "81",
        "SequenceName": "*ep_b1000#1",
        "SeriesDescription": "ABCD_dMRI",
        "ImageType": "['ORIGINAL', 'PRIMARY', 'DIFFUSION', 'NONE', 'ND', 'MOSAIC']",
    }
    return ds, summary


def test_every_construct_of_the_original_files_loads_and_classifies(tmp_path: Path) -> None:
    path = tmp_path / "classifyRules.json"
    path.write_text(json.dumps(ORIGINAL_STYLE, indent=2))
    rules = RuleSet.load(path)
    ds, summary = siemens_dti()
    result = classify(rules, ds, summary)
    assert result.types == ["SIEMENS", "mosaic", "original", "ABCD-DTI", "DIFFUSION", "axial"]
    qa_summary = {**summary, "SeriesDescription": "ABCD_QA_dMRI"}
    assert "ABCD-DTI" not in classify(rules, ds, qa_summary).types
    coil = with_private(mr_dataset(Manufacturer="SIEMENS"))
    coil[0x0051100F].value = "HC7"
    assert "Coil Error" in classify(rules, coil).types


def test_original_style_ge_and_localizer_series(tmp_path: Path) -> None:
    rules = rules_of(*ORIGINAL_STYLE)
    ge = with_private(
        mr_dataset(
            Manufacturer="GE MEDICAL SYSTEMS",
            ImagesInAcquisition="8424",
            SeriesDescription="DTI ORIG",
        )
    )
    assert "ABCD-DTI" in classify(rules, ge, {"SeriesDescription": "DTI ORIG"}).types
    images = [oriented(v, n) for n, v in enumerate((AXIAL, CORONAL, SAGITTAL, AXIAL), 1)]
    results = run_series(rules, images)
    assert "localizer" not in results[2].types  # defined before the orientations, as there
    assert "localizer" in results[3].types
    fmri = mr_dataset(Manufacturer="SIEMENS", NumberOfTemporalPositions="300")
    summary = {"NumSlices": "60", "AcquisitionLength": "TA 05:11"}
    assert "ABCD-rsfMRI" in classify(rules, fmri, summary).types


# ------------------------------------------------------------------------------ default rules


def siemens_mosaic_epi() -> Dataset:
    return mr_dataset(
        Manufacturer="SIEMENS",
        ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"],
        ScanningSequence="EP",
        SequenceVariant="SK",
        SequenceName="*epfid2d1_64",
        MRAcquisitionType="2D",
        EchoTime="30",
        RepetitionTime="800",
        SeriesDescription="rfMRI_REST_AP",
        ProtocolName="rfMRI_REST_AP",
        Rows=640,
        Columns=640,
    )


def ge_t1() -> Dataset:
    ds = mr_dataset(
        Manufacturer="GE MEDICAL SYSTEMS",
        ImageType=["ORIGINAL", "PRIMARY", "OTHER"],
        ScanningSequence="GR",
        SequenceVariant=["SS", "SK"],
        MRAcquisitionType="3D",
        RepetitionTime="8.2",
        EchoTime="3.2",
        InversionTime="450",
        SeriesDescription="Sag T1 BRAVO",
        ImageOrientationPatient=[str(x) for x in SAGITTAL],
        SliceThickness="1",
    )
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x0019109C, "LO", "bravo")
    return ds


def philips_dti() -> Dataset:
    ds = mr_dataset(
        Manufacturer="Philips Medical Systems",
        ImageType=["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"],
        ScanningSequence="SE",
        SequenceVariant="SK",
        MRAcquisitionType="2D",
        EchoTime="80",
        RepetitionTime="6000",
        SeriesDescription="DTI_32dir",
        DiffusionBValue=1000.0,
        DiffusionDirectionality="DIRECTIONAL",
    )
    ds.add_new(0x20010010, "LO", "Philips Imaging DD 001")
    ds.add_new(0x20011020, "LO", "DwiSE")
    return ds


def default_types(ds: Dataset) -> set[str]:
    summary = {"SeriesDescription": str(ds.SeriesDescription), "Manufacturer": str(ds.Manufacturer)}
    return set(classify(RuleSet.default(), ds, summary).types)


def test_default_rules_load_and_are_documented() -> None:
    rules = RuleSet.default()
    assert rules.source == "<default>"
    assert all(d.description for d in rules.definitions)
    kinds = {d.type for d in rules.definitions}
    assert {
        "GE",
        "SIEMENS",
        "PHILIPS",
        "original",
        "mosaic",
        "localizer",
        "axial",
        "sagittal",
        "coronal",
        "DIFFUSION",
        "T1",
        "T2",
        "FLAIR",
        "DTI",
        "fMRI-rest",
        "fMRI-task",
        "fieldmap",
        "SWI",
        "MRS",
        "QA",
        "secondary-capture",
        "derived",
    } <= kinds


def test_default_rules_classify_a_siemens_mosaic_resting_state_epi() -> None:
    types = default_types(siemens_mosaic_epi())
    assert {"SIEMENS", "original", "mosaic", "axial", "EPI", "fMRI", "fMRI-rest"} <= types
    assert not types & {"DIFFUSION", "T1", "T2", "FLAIR", "fMRI-task", "GE", "PHILIPS", "localizer"}


def test_default_rules_classify_a_ge_t1() -> None:
    types = default_types(ge_t1())
    assert {"GE", "original", "sagittal", "T1"} <= types
    assert not types & {"T2", "FLAIR", "EPI", "fMRI", "DIFFUSION", "SIEMENS", "mosaic"}


def test_default_rules_classify_a_philips_dti() -> None:
    types = default_types(philips_dti())
    assert {"PHILIPS", "original", "axial", "DIFFUSION", "DTI"} <= types
    assert not types & {"T2", "T1", "fMRI", "FLAIR", "SIEMENS"}


def test_default_rules_other_kinds() -> None:
    assert {"T2", "axial"} <= default_types(mr_dataset())
    flair = mr_dataset(
        InversionTime="2500",
        EchoTime="120",
        RepetitionTime="9000",
        ScanningSequence=["SE", "IR"],
        SeriesDescription="t2_tirm_tra_dark-fluid",
    )
    assert "FLAIR" in default_types(flair) and "T2" not in default_types(flair)
    task = siemens_mosaic_epi()
    task.SeriesDescription = "tfMRI_nBack_PA"
    assert {"fMRI", "fMRI-task"} <= default_types(task) and "fMRI-rest" not in default_types(task)
    fmap = mr_dataset(
        Manufacturer="SIEMENS", SequenceName="*fm2d2r", SeriesDescription="gre_field_mapping"
    )
    assert "fieldmap" in default_types(fmap)
    swi = mr_dataset(
        Manufacturer="SIEMENS", SequenceName="*swi3d1r", SeriesDescription="SWI_Images"
    )
    assert "SWI" in default_types(swi)
    mrs = mr_dataset(SOPClassUID="1.2.840.10008.5.1.4.1.1.4.2", SeriesDescription="svs_se_30")
    assert "MRS" in default_types(mrs)
    phantom = mr_dataset(PatientName="FBIRN^PHANTOM", SeriesDescription="QA bold")
    assert "QA" in default_types(phantom)
    sc = mr_dataset(SOPClassUID="1.2.840.10008.5.1.4.1.1.7", ImageType=["DERIVED", "SECONDARY"])
    assert {"secondary-capture", "CHECKBURNEDINFO", "derived"} <= default_types(sc)


def test_default_rules_find_a_three_plane_localizer_and_oblique_series() -> None:
    images = [oriented(v, n) for n, v in enumerate((AXIAL, CORONAL, SAGITTAL), 1)]
    results = run_series(RuleSet.default(), images)
    assert {"axial", "coronal", "sagittal", "localizer"} <= set(results[-1].types)
    assert "oblique" not in results[-1].types
    tilted = [
        mr_dataset(ImageOrientationPatient=["0.8", "0.6", "0", "0", "0", "-1"]) for _ in range(2)
    ]
    assert "oblique" in run_series(RuleSet.default(), tilted)[-1].types
    mixed = [tilted[0], oriented(AXIAL)]
    last = run_series(RuleSet.default(), mixed)[-1]
    assert "oblique" not in last.types and "oblique" in last.series_level_failed
