"""Filter logic: the parser and comparisons, then filterLogic on record exports."""

from __future__ import annotations

import pytest
import redcap
from redcap import RedcapError

from redcap_emulator.filter_logic import (
    FieldRef,
    FilterLogicError,
    compare,
    evaluate,
    parse_filter_logic,
)
from tests.redcap_emulator.builders import study, transfer


def holds(logic: str, **values: str) -> bool:
    return evaluate(parse_filter_logic(logic), lambda ref: values.get(ref.field, ""))


@pytest.mark.parametrize(
    ("logic", "expected"),
    [
        ("[a] = 'x'", True),
        ('[a] = "x"', True),
        ("[a] = 'X'", False),
        ("[a] <> 'x'", False),
        ("[a] != 'y'", True),
        ("[n] = 10", True),
        ("[n] = '10.0'", True),
        ("[n] > 9", True),
        ("[n] < 9", False),
        ("[n] >= 10 and [n] <= 10", True),
        ("[n] > 2", True),  # numeric, although '10' < '2' as text
        ("[blank] = ''", True),
        ("[blank] <> ''", False),
        ("[blank] < 5", False),
        ("[blank] > 5", False),
        ("[a] = 'y' or [n] = 10", True),
        ("[a] = 'y' or [n] = 11 and [a] = 'x'", False),
        ("([a] = 'y' or [n] = 10) and [a] = 'x'", True),
        ("[a] = 'x' AND ([n] = 1 OR [n] = 10)", True),
    ],
)
def test_logic_evaluates_like_redcap(logic: str, expected: bool) -> None:
    assert holds(logic, a="x", n="10", blank="") is expected


@pytest.mark.parametrize(
    "logic",
    [
        "[a] = ",
        "[a] 'x'",
        "([a] = 'x'",
        "[a] = 'x')",
        "[A] = 1",
        "[a] = 'x' xor [b] = 1",
        "[a] ~ 1",
        "'x'",
    ],
)
def test_malformed_logic_is_refused(logic: str) -> None:
    with pytest.raises(FilterLogicError):
        parse_filter_logic(logic)


def test_references_carry_event_and_checkbox_code() -> None:
    logic = parse_filter_logic("[event_1_arm_1][transfer_error(2)] = '1'")

    seen: list[FieldRef] = []
    evaluate(logic, lambda ref: seen.append(ref) or "1")

    assert seen == [FieldRef("transfer_error", "event_1_arm_1", "2")]


def test_text_comparison_when_either_side_is_not_a_number() -> None:
    assert compare("2024-01-02", ">", "2023-12-31")
    assert not compare("abc", "=", "ABC")


@pytest.fixture
def filled(incoming: redcap.Project) -> redcap.Project:
    incoming.import_records(
        [
            study("1", study_description="brain"),
            transfer("1", 1, transfer_project_name="A", transfer_error___2=1),
            transfer("1", 2, transfer_project_name="B"),
            study("2", study_description="knee"),
            transfer("2", 1, transfer_project_name="A"),
            study("3", study_description="brain"),
        ]
    )
    return incoming


def selected(project: redcap.Project, logic: str, **selection: object) -> list[tuple[str, object]]:
    rows = project.export_records(filter_logic=logic, **selection)
    return [(r["study_instance_uid"], r["redcap_repeat_instance"]) for r in rows]


def test_filter_on_a_repeating_field_returns_matching_instances(filled: redcap.Project) -> None:
    assert selected(filled, '[transfer_project_name]="A"') == [("1", 1), ("2", 1)]
    assert selected(filled, "[transfer_project_name] <> ''") == [("1", 1), ("1", 2), ("2", 1)]


def test_filter_on_a_study_field_returns_the_study_rows(filled: redcap.Project) -> None:
    assert selected(filled, "[study_description] = 'brain'", fields=["study_description"]) == [
        ("1", ""),
        ("3", ""),
    ]


def test_instance_rows_see_the_fields_of_their_record(filled: redcap.Project) -> None:
    logic = "[study_description] = 'knee' and [transfer_project_name] = 'A'"

    assert selected(filled, logic) == [("2", 1)]


def test_filter_on_a_checkbox_option(filled: redcap.Project) -> None:
    assert selected(filled, "[transfer_error(2)] = '1'") == [("1", 1)]
    assert selected(filled, "[transfer_error___2] = 1") == [("1", 1)]


def test_filter_combines_with_selected_records(filled: redcap.Project) -> None:
    assert selected(filled, "[transfer_project_name] = 'A'", records=["2"]) == [("2", 1)]


@pytest.mark.parametrize("logic", ["[study_description] = ", "[no_such_field] = 1"])
def test_invalid_filter_logic_is_a_400(filled: redcap.Project, logic: str) -> None:
    with pytest.raises(RedcapError, match="filterLogic"):
        filled.export_records(filter_logic=logic)
