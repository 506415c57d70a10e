"""Longitudinal projects: arms, events, instrument-event mappings and data per event."""

from __future__ import annotations

import pytest
import redcap
from redcap import RedcapError

from redcap_emulator.emulator import Emulator
from redcap_emulator.server import EmulatorServer
from tests.redcap_emulator.builders import field


@pytest.fixture
def study_project(emulator: Emulator, server: EmulatorServer) -> redcap.Project:
    """Like a FIONA research project: participants, and repeating imaging in the first event."""
    project_id = emulator.create_project("PROJ", longitudinal=True)
    project = redcap.Project(server.url, emulator.add_token(project_id))
    project.import_metadata(
        [
            field("record_id", "demographics"),
            field("sex", "demographics", "dropdown", select_choices_or_calculations="0, F | 1, M"),
            field("img_study_instance_uid", "imaging"),
            field("img_event_name", "imaging"),
            field("visit_note", "visit"),
        ]
    )
    project.import_events(
        [
            {"event_name": "Event 1", "arm_num": 1, "unique_event_name": "event_1_arm_1"},
            {"event_name": "Follow up", "arm_num": 1},
        ]
    )
    project.import_instrument_event_mappings(
        [
            {"arm_num": 1, "unique_event_name": "event_1_arm_1", "form": "demographics"},
            {"arm_num": 1, "unique_event_name": "event_1_arm_1", "form": "imaging"},
            {"arm_num": 1, "unique_event_name": "follow_up_arm_1", "form": "visit"},
            {"arm_num": 1, "unique_event_name": "follow_up_arm_1", "form": "imaging"},
        ]
    )
    project.import_repeating_instruments_events(
        [{"event_name": "event_1_arm_1", "form_name": "imaging", "custom_form_label": ""}]
    )
    return redcap.Project(server.url, project.token)


def test_new_longitudinal_project_has_the_default_event(
    emulator: Emulator, server: EmulatorServer
) -> None:
    project = redcap.Project(
        server.url, emulator.add_token(emulator.create_project("L", longitudinal=True))
    )

    assert project.is_longitudinal
    assert project.export_arms() == [{"arm_num": 1, "name": "Arm 1"}]
    assert [e["unique_event_name"] for e in project.export_events()] == ["event_1_arm_1"]
    assert project.export_instrument_event_mappings() == [
        {"arm_num": 1, "unique_event_name": "event_1_arm_1", "form": "my_first_instrument"}
    ]


def test_events_and_mappings_as_imported(study_project: redcap.Project) -> None:
    events = study_project.export_events()

    assert [(e["event_name"], e["unique_event_name"]) for e in events] == [
        ("Event 1", "event_1_arm_1"),
        ("Follow up", "follow_up_arm_1"),
    ]
    assert len(study_project.export_instrument_event_mappings()) == 4
    assert study_project.export_repeating_instruments_events() == [
        {"event_name": "event_1_arm_1", "form_name": "imaging", "custom_form_label": ""}
    ]
    assert study_project.export_project_info()["is_longitudinal"] == 1


def test_records_export_one_row_per_event_and_instance(study_project: redcap.Project) -> None:
    study_project.import_records(
        [
            {"record_id": "P01", "redcap_event_name": "event_1_arm_1", "sex": "1"},
            {
                "record_id": "P01",
                "redcap_event_name": "event_1_arm_1",
                "redcap_repeat_instrument": "imaging",
                "redcap_repeat_instance": 1,
                "img_study_instance_uid": "2.25.1",
            },
            {
                "record_id": "P01",
                "redcap_event_name": "follow_up_arm_1",
                "visit_note": "ok",
                "img_study_instance_uid": "2.25.2",
            },
        ]
    )

    rows = study_project.export_records()

    assert [
        (r["redcap_event_name"], r["redcap_repeat_instrument"], r["redcap_repeat_instance"])
        for r in rows
    ] == [("event_1_arm_1", "", ""), ("event_1_arm_1", "imaging", 1), ("follow_up_arm_1", "", "")]
    assert list(rows[0])[:4] == [
        "record_id",
        "redcap_event_name",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
    ]
    assert (rows[0]["sex"], rows[0]["visit_note"], rows[0]["visit_complete"]) == ("1", "", "")
    assert (rows[2]["img_study_instance_uid"], rows[2]["demographics_complete"]) == ("2.25.2", "")
    assert [
        r["redcap_event_name"] for r in study_project.export_records(events=["follow_up_arm_1"])
    ] == ["follow_up_arm_1"]
    assert study_project.export_records(raw_or_label="label")[2]["redcap_event_name"] == "Follow up"


def test_rows_without_an_event_go_to_the_first_event(study_project: redcap.Project) -> None:
    study_project.import_records([{"record_id": "P02", "sex": "0"}])

    assert study_project.export_records()[0]["redcap_event_name"] == "event_1_arm_1"


def test_unknown_events_are_refused(study_project: redcap.Project) -> None:
    with pytest.raises(RedcapError, match="redcap_event_name are invalid: nope_arm_1"):
        study_project.import_records([{"record_id": "P03", "redcap_event_name": "nope_arm_1"}])
    with pytest.raises(RedcapError, match='parameter "events" are not valid'):
        study_project.export_records(events=["nope_arm_1"])


def test_fields_of_undesignated_instruments_are_refused(study_project: redcap.Project) -> None:
    with pytest.raises(RedcapError, match="not designated"):
        study_project.import_records(
            [{"record_id": "P04", "redcap_event_name": "follow_up_arm_1", "sex": "1"}]
        )


def test_mapping_import_replaces_the_arms_mapping(study_project: redcap.Project) -> None:
    study_project.import_instrument_event_mappings(
        [{"arm_num": 1, "unique_event_name": "event_1_arm_1", "form": "demographics"}]
    )

    assert study_project.export_instrument_event_mappings() == [
        {"arm_num": 1, "unique_event_name": "event_1_arm_1", "form": "demographics"}
    ]


def test_event_import_with_override_replaces_all_events(study_project: redcap.Project) -> None:
    assert study_project.import_events([{"event_name": "Baseline", "arm_num": 1}], override=1) == 1

    assert [e["unique_event_name"] for e in study_project.export_events()] == ["baseline_arm_1"]
    assert study_project.export_instrument_event_mappings() == []


def test_new_arm_with_its_event(study_project: redcap.Project) -> None:
    study_project.import_arms([{"arm_num": 2, "name": "Control"}])
    study_project.import_events([{"event_name": "Event 1", "arm_num": 2}])

    assert [e["unique_event_name"] for e in study_project.export_events(arms=["2"])] == [
        "event_1_arm_2"
    ]
    assert study_project.delete_arms(["2"]) == 1
    assert [a["arm_num"] for a in study_project.export_arms()] == [1]


def test_instances_of_a_repeating_event(study_project: redcap.Project) -> None:
    study_project.import_repeating_instruments_events(
        [{"event_name": "follow_up_arm_1", "form_name": "", "custom_form_label": ""}]
    )
    visits = [
        {
            "record_id": "P05",
            "redcap_event_name": "follow_up_arm_1",
            "redcap_repeat_instance": n,
            "visit_note": f"visit {n}",
        }
        for n in (2, 3)
    ]
    study_project.import_records(visits)

    rows = study_project.export_records(events=["follow_up_arm_1"])

    assert [
        (r["redcap_repeat_instrument"], r["redcap_repeat_instance"], r["visit_note"]) for r in rows
    ] == [("", 2, "visit 2"), ("", 3, "visit 3")]
