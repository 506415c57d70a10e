"""Data dictionary import/export, instruments and export field names, through PyCap."""

from __future__ import annotations

import csv
import io

import pytest
import redcap
from redcap import RedcapError

from redcap_emulator.emulator import Emulator
from redcap_emulator.metadata import DICTIONARY_FILE_TITLES
from redcap_emulator.server import EmulatorServer
from tests.redcap_emulator.builders import field, incoming_dictionary


def test_new_project_has_redcaps_starting_dictionary(
    emulator: Emulator, server: EmulatorServer
) -> None:
    project = redcap.Project(server.url, emulator.add_token(emulator.create_project("P")))

    assert project.field_names == ["record_id"]
    assert project.export_instruments() == [
        {"instrument_name": "my_first_instrument", "instrument_label": "My First Instrument"}
    ]


def test_metadata_round_trip_keeps_every_row(incoming: redcap.Project) -> None:
    exported = incoming.export_metadata()

    assert [row["field_name"] for row in exported] == [
        f["field_name"] for f in incoming_dictionary()
    ]
    assert exported[3]["text_validation_type_or_show_slider_number"] == "date_ymd"
    assert set(exported[0]) >= {
        "field_name",
        "form_name",
        "select_choices_or_calculations",
        "field_annotation",
    }
    assert incoming.import_metadata(exported) == len(exported)
    assert incoming.export_metadata() == exported


def test_metadata_export_filters_by_fields_and_forms(incoming: redcap.Project) -> None:
    by_field = incoming.export_metadata(fields=["series_num_files"])
    by_form = incoming.export_metadata(forms=["series"])

    assert [r["field_name"] for r in by_field] == ["series_num_files"]
    assert [r["field_name"] for r in by_form] == [
        "series_instance_uid",
        "series_description",
        "series_num_files",
    ]


def test_metadata_export_refuses_unknown_fields(incoming: redcap.Project) -> None:
    with pytest.raises(RedcapError) as caught:
        incoming.export_metadata(fields=["nope"])

    assert caught.value.args[0]["error"] == (
        "The following values in the parameter \"fields\" are not valid: 'nope'"
    )


def test_metadata_csv_round_trip(incoming: redcap.Project) -> None:
    text = incoming.export_metadata(format_type="csv")

    assert text.startswith("field_name,form_name,")
    assert incoming.import_metadata(text, import_format="csv") == len(incoming_dictionary())


def test_dictionary_file_with_its_column_titles_is_accepted(incoming: redcap.Project) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(DICTIONARY_FILE_TITLES)
    writer.writerow(["record_id", "autoid", "", "text", "Record ID"] + [""] * 13)
    writer.writerow(
        ["autoid_method", "autoid", "", "dropdown", "Method", "1, Random ID"] + [""] * 12
    )

    assert incoming.import_metadata(buffer.getvalue(), import_format="csv") == 2
    assert incoming.export_metadata()[1]["select_choices_or_calculations"] == "1, Random ID"


def test_invalid_dictionary_is_refused_and_old_one_kept(incoming: redcap.Project) -> None:
    broken = [field("record_id", "f"), field("Bad Name", "f"), field("choice", "f", "dropdown")]

    with pytest.raises(RedcapError, match="Bad Name") as caught:
        incoming.import_metadata(broken)

    assert "choices" in str(caught.value)
    assert len(incoming.export_metadata()) == len(incoming_dictionary())


def test_metadata_import_is_refused_in_production(
    emulator: Emulator, server: EmulatorServer
) -> None:
    project_id = emulator.create_project("Prod", production=True)
    project = redcap.Project(server.url, emulator.add_token(project_id))

    with pytest.raises(RedcapError, match="production"):
        project.import_metadata(incoming_dictionary())
    assert project.export_project_info()["in_production"] == 1


def test_metadata_import_needs_the_design_right(emulator: Emulator, server: EmulatorServer) -> None:
    token = emulator.add_token(emulator.create_project("P"), can_design=False)

    with pytest.raises(RedcapError, match="Design"):
        redcap.Project(server.url, token).import_metadata(incoming_dictionary())


def test_export_field_names_expands_checkboxes_and_skips_descriptive(
    incoming: redcap.Project,
) -> None:
    names = incoming.export_field_names()
    exported = [n["export_field_name"] for n in names]

    assert "transfer_info_text" not in exported
    assert exported[
        exported.index("transfer_error___1") : exported.index("transfer_error___3") + 1
    ] == ["transfer_error___1", "transfer_error___2", "transfer_error___3"]
    assert incoming.export_field_names(field="transfer_error")[1] == {
        "original_field_name": "transfer_error",
        "choice_value": "2",
        "export_field_name": "transfer_error___2",
    }


def test_project_info_reports_repeating_and_classic(incoming: redcap.Project) -> None:
    info = incoming.export_project_info()

    assert info["is_longitudinal"] == 0
    assert info["has_repeating_instruments_or_events"] == 1
    assert info["project_title"] == "Incoming"
    assert not incoming.is_longitudinal
    assert incoming.export_repeating_instruments_events() == [
        {"form_name": "series", "custom_form_label": ""},
        {"form_name": "transfers", "custom_form_label": ""},
    ]
    assert str(incoming.export_version()) == "14.5.0"
