"""Data dictionaries and rows for the emulator tests, built here rather than read from files."""

from __future__ import annotations


def field(name: str, form: str, field_type: str = "text", **extra: str) -> dict[str, str]:
    """One data-dictionary row (the keys REDCap's metadata export uses)."""
    return {
        "field_name": name,
        "form_name": form,
        "field_type": field_type,
        "field_label": name.replace("_", " ").title(),
        **extra,
    }


def incoming_dictionary() -> list[dict[str, str]]:
    """A dictionary shaped like FIONA's Incoming project (repeating series and transfers)."""
    return [
        field("study_instance_uid", "incoming_studies"),
        field("study_patient_id", "incoming_studies"),
        field("study_description", "incoming_studies"),
        field(
            "study_date", "incoming_studies", text_validation_type_or_show_slider_number="date_ymd"
        ),
        field(
            "study_arrival_date",
            "incoming_studies",
            text_validation_type_or_show_slider_number="datetime_ymd",
        ),
        field("series_instance_uid", "series"),
        field("series_description", "series"),
        field(
            "series_num_files",
            "series",
            text_validation_type_or_show_slider_number="integer",
            text_validation_min="0",
        ),
        field("transfer_info_text", "transfers", "descriptive"),
        field(
            "transfer_requested_date",
            "transfers",
            text_validation_type_or_show_slider_number="datetime_ymd",
        ),
        field("transfer_project_name", "transfers"),
        field("transfer_name", "transfers"),
        field(
            "transfer_error",
            "transfers",
            "checkbox",
            select_choices_or_calculations="1, Anonymization error | 2, Send error | 3, Pixels",
        ),
        field(
            "transfer_active_proc_time",
            "transfers",
            text_validation_type_or_show_slider_number="number",
        ),
        field(
            "transfer_priority",
            "transfers",
            "dropdown",
            select_choices_or_calculations="1, Low | 2, High",
        ),
        field("transfer_done", "transfers", "yesno"),
    ]


REPEATING = [
    {"form_name": "series", "custom_form_label": ""},
    {"form_name": "transfers", "custom_form_label": ""},
]


def study(uid: str, **values: object) -> dict[str, object]:
    return {"study_instance_uid": uid, **values}


def series(uid: str, instance: int, **values: object) -> dict[str, object]:
    return {
        "study_instance_uid": uid,
        "redcap_repeat_instrument": "series",
        "redcap_repeat_instance": instance,
        **values,
    }


def transfer(uid: str, instance: int, **values: object) -> dict[str, object]:
    return {
        "study_instance_uid": uid,
        "redcap_repeat_instrument": "transfers",
        "redcap_repeat_instance": instance,
        **values,
    }
