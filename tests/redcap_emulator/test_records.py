"""Record import, export and delete through PyCap against a running emulator."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import redcap
from redcap import RedcapError

from tests.redcap_emulator.builders import series, study, transfer


def rows_of(project: redcap.Project, **selection: object) -> list[dict[str, object]]:
    return project.export_records(**selection)  # type: ignore[no-any-return]


def test_study_with_repeating_instances_exports_as_redcap_flat_rows(
    incoming: redcap.Project,
) -> None:
    incoming.import_records(
        [
            study("1.2.3", study_description="Head", incoming_studies_complete=2),
            series("1.2.3", 1, series_instance_uid="1.2.3.1", series_num_files=12),
            series("1.2.3", 2, series_instance_uid="1.2.3.2", series_num_files=0),
            transfer("1.2.3", 1, transfer_project_name="PROJ", transfer_error___2="1"),
        ]
    )

    base, first, second, moved = rows_of(incoming)

    assert base["redcap_repeat_instrument"] == "" and base["redcap_repeat_instance"] == ""
    assert base["study_description"] == "Head" and base["incoming_studies_complete"] == "2"
    assert base["series_instance_uid"] == "" and base["transfer_error___1"] == ""
    assert (first["redcap_repeat_instrument"], first["redcap_repeat_instance"]) == ("series", 1)
    assert first["study_instance_uid"] == "1.2.3" and first["study_description"] == ""
    assert first["series_num_files"] == "12" and first["series_complete"] == "0"
    assert second["series_instance_uid"] == "1.2.3.2" and second["series_num_files"] == "0"
    assert moved["transfer_project_name"] == "PROJ"
    assert [moved[f"transfer_error___{c}"] for c in "123"] == ["0", "1", "0"]
    assert list(base)[:3] == [
        "study_instance_uid",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
    ]


def test_importing_to_an_existing_instance_merges_into_it(incoming: redcap.Project) -> None:
    incoming.import_records([transfer("9", 1, transfer_project_name="P", transfer_name="A")])
    incoming.import_records([transfer("9", 1, transfer_name="B")])

    moved = rows_of(incoming, forms=["transfers"])[1]

    assert (moved["transfer_project_name"], moved["transfer_name"]) == ("P", "B")


def test_normal_import_ignores_blanks_and_overwrite_erases(incoming: redcap.Project) -> None:
    incoming.import_records([study("7", study_description="Knee", study_patient_id="abc")])

    incoming.import_records([study("7", study_description="", study_patient_id="def")])
    assert rows_of(incoming)[0]["study_description"] == "Knee"

    incoming.import_records([study("7", study_description="")], overwrite="overwrite")
    after = rows_of(incoming)[0]
    assert after["study_description"] == "" and after["study_patient_id"] == "def"


def test_return_content_count_and_ids(incoming: redcap.Project) -> None:
    rows = [study("a"), series("a", 1, series_num_files=1), study("b")]

    assert incoming.import_records(rows) == {"count": 2}
    assert incoming.import_records(rows, return_content="ids") == ["a", "b"]


def test_force_auto_number_gives_the_next_numbers(incoming: redcap.Project) -> None:
    incoming.import_records([study("4")])

    pairs = incoming.import_records(
        [study("x", study_description="one"), series("x", 1, series_num_files=2), study("y")],
        return_content="auto_ids",
        force_auto_number=True,
    )

    assert pairs == ["5,x", "6,y"]
    assert [r["study_instance_uid"] for r in rows_of(incoming, records=["5"])] == ["5", "5"]


def test_unknown_fields_reject_the_whole_import(incoming: redcap.Project) -> None:
    with pytest.raises(RedcapError) as caught:
        incoming.import_records([study("1"), study("2", nope="x", bad="y")])

    assert caught.value.args[0] == {
        "error": "The following fields were not found in the project as real data fields: nope, bad"
    }
    assert rows_of(incoming) == []


@pytest.mark.parametrize(
    ("row", "column"),
    [
        (series("1", 1, series_num_files="twelve"), "series_num_files"),
        (study("1", study_date="2024-02-30"), "study_date"),
        (study("1", study_arrival_date="2024-02-03 10:00:00"), "study_arrival_date"),
        (transfer("1", 1, transfer_active_proc_time="1,5"), "transfer_active_proc_time"),
        (transfer("1", 1, transfer_priority="3"), "transfer_priority"),
        (transfer("1", 1, transfer_done="yes"), "transfer_done"),
        (transfer("1", 1, transfer_error___1="2"), "transfer_error___1"),
        (study("1", incoming_studies_complete="5"), "incoming_studies_complete"),
    ],
)
def test_invalid_values_are_refused_with_record_field_and_value(
    incoming: redcap.Project, row: dict[str, object], column: str
) -> None:
    with pytest.raises(RedcapError) as caught:
        incoming.import_records([study("0"), row])

    message = caught.value.args[0]["error"]
    assert message.startswith(f'"1","{column}","{row[column]}",')
    assert rows_of(incoming) == []


def test_valid_typed_values_are_accepted(incoming: redcap.Project) -> None:
    incoming.import_records(
        [
            study("1", study_date="2024-02-29", study_arrival_date="2024-02-29 23:59"),
            series("1", 1, series_num_files="-0"),
            transfer(
                "1", 1, transfer_active_proc_time="1.5e3", transfer_priority=2, transfer_done=0
            ),
        ]
    )

    assert rows_of(incoming)[2]["transfer_active_proc_time"] == "1.5e3"


def test_dates_in_dmy_are_stored_as_ymd(incoming: redcap.Project) -> None:
    incoming.import_records([study("1", study_date="31-12-2023")], date_format="DMY")

    assert rows_of(incoming)[0]["study_date"] == "2023-12-31"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            {
                "study_instance_uid": "1",
                "redcap_repeat_instrument": "incoming_studies",
                "redcap_repeat_instance": 1,
            },
            "not a repeating instrument",
        ),
        (series("1", 0, series_num_files=1), "positive integer"),
        (series("1", "two", series_num_files=1), "positive integer"),
        (study("1", series_num_files=3), "repeating instrument series"),
        (series("1", 1, transfer_name="x"), "not on the repeating instrument series"),
        (study("1", redcap_repeat_instance=2), "must be blank"),
    ],
)
def test_misplaced_repeating_rows_are_refused(
    incoming: redcap.Project, row: dict[str, object], reason: str
) -> None:
    with pytest.raises(RedcapError, match=reason):
        incoming.import_records([row])


def test_round_trip_of_an_export_imports_cleanly(incoming: redcap.Project) -> None:
    incoming.import_records(
        [study("1", study_description="x"), transfer("1", 1, transfer_error___3=1)]
    )
    exported = rows_of(incoming)

    assert incoming.import_records(exported, overwrite="overwrite") == {"count": 1}
    assert rows_of(incoming) == exported


def test_fields_forms_and_records_select_columns_and_rows(incoming: redcap.Project) -> None:
    incoming.import_records(
        [
            study("1", study_description="a"),
            series("1", 1, series_num_files=3),
            transfer("1", 1, transfer_name="n"),
            study("2", study_description="b"),
        ]
    )

    by_fields = rows_of(incoming, fields=["series_num_files"])
    by_form = rows_of(incoming, forms=["transfers"], records=["1"])

    assert list(by_fields[0]) == [
        "study_instance_uid",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
        "series_num_files",
    ]
    assert [(r["study_instance_uid"], r["redcap_repeat_instrument"]) for r in by_fields] == [
        ("1", ""),
        ("1", "series"),
        ("2", ""),
    ]
    assert [r["redcap_repeat_instrument"] for r in by_form] == ["", "transfers"]
    assert "transfers_complete" in by_form[1] and "series_num_files" not in by_form[1]
    assert rows_of(incoming, records=["2", "missing"])[0]["study_description"] == "b"


def test_unknown_export_fields_are_refused(incoming: redcap.Project) -> None:
    with pytest.raises(RedcapError, match='parameter "fields" are not valid'):
        rows_of(incoming, fields=["study_instance_uid", "not_a_field"])


def test_labels_for_choices_checkboxes_and_status(incoming: redcap.Project) -> None:
    incoming.import_records(
        [
            transfer(
                "1",
                1,
                transfer_priority=2,
                transfer_done=1,
                transfer_error___1=1,
                transfers_complete=2,
            )
        ]
    )

    labelled = rows_of(incoming, raw_or_label="label")[1]
    checkbox_labels = rows_of(incoming, raw_or_label="label", export_checkbox_labels=True)[1]

    assert (labelled["transfer_priority"], labelled["transfer_done"]) == ("High", "Yes")
    assert (labelled["transfer_error___1"], labelled["transfer_error___2"]) == (
        "Checked",
        "Unchecked",
    )
    assert labelled["transfers_complete"] == "Complete"
    assert labelled["redcap_repeat_instrument"] == "Transfers"
    assert (checkbox_labels["transfer_error___1"], checkbox_labels["transfer_error___2"]) == (
        "Anonymization error",
        "",
    )


def test_csv_export_and_import(incoming: redcap.Project) -> None:
    incoming.import_records('study_instance_uid,study_description\n1,"a, b"\n', import_format="csv")

    text = incoming.export_records(format_type="csv", fields=["study_description"])

    assert (
        text.splitlines()[0]
        == "study_instance_uid,redcap_repeat_instrument,redcap_repeat_instance,study_description"
    )
    assert text.splitlines()[1] == '1,,,"a, b"'


def test_date_range_selects_recently_modified_records(incoming: redcap.Project) -> None:
    incoming.import_records([study("1"), study("2")])
    now = datetime.now()

    assert len(rows_of(incoming, date_begin=now - timedelta(minutes=5))) == 2
    assert rows_of(incoming, date_begin=now + timedelta(minutes=5)) == []
    assert rows_of(incoming, date_end=now - timedelta(minutes=5)) == []


def test_delete_removes_records_and_counts_them(incoming: redcap.Project) -> None:
    incoming.import_records(
        [study("1"), series("1", 1, series_num_files=1), study("2"), study("3")]
    )

    assert incoming.delete_records(["1", "3"]) == 2
    assert [r["study_instance_uid"] for r in rows_of(incoming)] == ["2"]


def test_deleting_an_unknown_record_deletes_nothing(incoming: redcap.Project) -> None:
    incoming.import_records([study("1")])

    with pytest.raises(RedcapError, match="The following records do not exist: 9"):
        incoming.delete_records(["1", "9"])
    assert len(rows_of(incoming)) == 1


def test_delete_of_one_repeating_instance(incoming: redcap.Project) -> None:
    incoming.import_records(
        [series("1", 1, series_num_files=1), series("1", 2, series_num_files=2)]
    )

    assert incoming.delete_records(["1"], instrument="series", repeat_instance=2) == 1
    assert [r["redcap_repeat_instance"] for r in rows_of(incoming)] == ["", 1]


def test_generate_next_record_name_follows_the_highest_number(incoming: redcap.Project) -> None:
    assert incoming.generate_next_record_name() == "1"

    incoming.import_records([study("9"), study("10"), study("1.2.840")])

    assert incoming.generate_next_record_name() == "11"
