"""API handlers for a project's setup: project, version, metadata, instruments, field names,
arms, events, instrument-event mappings and repeating instruments/events."""

from __future__ import annotations

from redcap_emulator import longitudinal, metadata, store_design
from redcap_emulator.design import METADATA_COLUMNS
from redcap_emulator.protocol import (
    NO_DESIGN_RIGHT,
    PRODUCTION_REFUSED,
    ApiCall,
    ApiError,
    ApiResponse,
    count_response,
    data_format,
    object_response,
    parse_table,
    table_response,
    text_response,
)

REDCAP_VERSION = "14.5.0"  # the REDCap release whose API behaviour is emulated


def export_version(call: ApiCall) -> ApiResponse:
    return text_response(REDCAP_VERSION)


def export_project(call: ApiCall) -> ApiResponse:
    info = call.design.info
    project: dict[str, object] = {
        "project_id": info.project_id,
        "project_title": info.title,
        "creation_time": info.creation_time,
        "production_time": info.production_time,
        "in_production": int(info.production),
        "project_language": "English",
        "purpose": 0,
        "purpose_other": "",
        "project_notes": "",
        "custom_record_label": "",
        "secondary_unique_field": "",
        "is_longitudinal": int(info.longitudinal),
        "has_repeating_instruments_or_events": int(call.design.has_repeating),
        "surveys_enabled": 0,
        "scheduling_enabled": 0,
        "record_autonumbering_enabled": int(info.autonumbering),
        "randomization_enabled": 0,
        "ddp_enabled": 0,
        "project_irb_number": "",
        "project_grant_number": "",
        "project_pi_firstname": "",
        "project_pi_lastname": "",
        "display_today_now_button": 1,
        "missing_data_codes": "",
        "external_modules": "",
        "bypass_branching_erase_field_prompt": 0,
    }
    return object_response(project, data_format(call.params))


def export_metadata(call: ApiCall) -> ApiResponse:
    rows = metadata.export_metadata(
        call.design, call.params.array("fields"), call.params.array("forms")
    )
    return table_response(rows, METADATA_COLUMNS, data_format(call.params))


def import_metadata(call: ApiCall) -> ApiResponse:
    _require_design_change(call, development_only=True)
    rows = metadata.parse_dictionary(call.params.get("data"), data_format(call.params))
    problems = metadata.dictionary_problems(rows)
    if problems:
        raise ApiError(400, "\n".join(problems))
    store_design.save_dictionary(call.conn, call.project_id, rows)
    return count_response(len(rows), call.return_format)


def export_instruments(call: ApiCall) -> ApiResponse:
    rows = metadata.export_instruments(call.design)
    return table_response(rows, ["instrument_name", "instrument_label"], data_format(call.params))


def export_field_names(call: ApiCall) -> ApiResponse:
    rows = metadata.export_field_names(call.design, call.params.get("field").strip())
    columns = ["original_field_name", "choice_value", "export_field_name"]
    return table_response(rows, columns, data_format(call.params))


def export_arms(call: ApiCall) -> ApiResponse:
    longitudinal.require_longitudinal(call.design, "arms")
    rows = longitudinal.export_arms(call.design, call.params.array("arms"))
    return table_response(rows, ["arm_num", "name"], data_format(call.params))


def import_arms(call: ApiCall) -> ApiResponse:
    longitudinal.require_longitudinal(call.design, "arms", "import")
    _require_design_change(call, development_only=True)
    arms = longitudinal.arms_from_rows(_uploaded_rows(call))
    if call.params.get("override").strip() == "1":
        keep = {a.number for a in arms}
        store_design.delete_arms(
            call.conn, call.project_id, [a.number for a in call.design.arms if a.number not in keep]
        )
    for arm in arms:
        store_design.save_arm(call.conn, call.project_id, arm)
    return count_response(len(arms), call.return_format)


def delete_arms(call: ApiCall) -> ApiResponse:
    longitudinal.require_longitudinal(call.design, "arms", "delete")
    _require_design_change(call, development_only=True)
    numbers = longitudinal.chosen_arms(call.design, _required_array(call, "arms"))
    count = store_design.delete_arms(call.conn, call.project_id, sorted(numbers))
    return count_response(count, call.return_format)


def export_events(call: ApiCall) -> ApiResponse:
    longitudinal.require_longitudinal(call.design, "events")
    rows = longitudinal.export_events(call.design, call.params.array("arms"))
    columns = [
        "event_name",
        "arm_num",
        "unique_event_name",
        "custom_event_label",
        "event_id",
        "days_offset",
        "offset_min",
        "offset_max",
    ]
    return table_response(rows, columns, data_format(call.params))


def import_events(call: ApiCall) -> ApiResponse:
    longitudinal.require_longitudinal(call.design, "events", "import")
    _require_design_change(call, development_only=True)
    replacing = call.params.get("override").strip() == "1"
    events = longitudinal.events_from_rows(call.design, _uploaded_rows(call), replacing)
    if replacing:
        keep = {e.unique_name for e in events}
        gone = [e.unique_name for e in call.design.events if e.unique_name not in keep]
        store_design.delete_events(call.conn, call.project_id, gone)
    for event in events:
        store_design.save_event(call.conn, call.project_id, event)
    return count_response(len(events), call.return_format)


def delete_events(call: ApiCall) -> ApiResponse:
    longitudinal.require_longitudinal(call.design, "events", "delete")
    _require_design_change(call, development_only=True)
    names = _required_array(call, "events")
    metadata.reject_unknown_values("events", names, list(call.design.event_names))
    count = store_design.delete_events(call.conn, call.project_id, names)
    return count_response(count, call.return_format)


def export_form_events(call: ApiCall) -> ApiResponse:
    longitudinal.require_longitudinal(call.design, "form/event mappings")
    rows = longitudinal.export_designations(call.design, call.params.array("arms"))
    return table_response(rows, ["arm_num", "unique_event_name", "form"], data_format(call.params))


def import_form_events(call: ApiCall) -> ApiResponse:
    longitudinal.require_longitudinal(call.design, "form/event mappings", "import")
    _require_design_change(call, development_only=True)
    pairs = longitudinal.designations_from_rows(call.design, _uploaded_rows(call))
    # REDCap replaces the mapping of every arm the upload mentions.
    arms = {e.arm for e in call.design.events if any(e.unique_name == p[0] for p in pairs)}
    events = [e.unique_name for e in call.design.events if e.arm in arms]
    store_design.replace_designations(call.conn, call.project_id, events, pairs)
    return count_response(len(pairs), call.return_format)


def export_repeating(call: ApiCall) -> ApiResponse:
    columns = ["form_name", "custom_form_label"]
    if call.design.info.longitudinal:
        columns.insert(0, "event_name")
    rows = longitudinal.export_repeating(call.design)
    return table_response(rows, columns, data_format(call.params))


def import_repeating(call: ApiCall) -> ApiResponse:
    _require_design_change(call, development_only=False)
    setup = longitudinal.repeating_from_rows(call.design, _uploaded_rows(call))
    store_design.replace_repeating(call.conn, call.project_id, setup)
    return count_response(len(setup), call.return_format)


def _require_design_change(call: ApiCall, development_only: bool) -> None:
    """REDCap's checks before a setup change: development status, then the design right."""
    if development_only and call.design.info.production:
        raise ApiError(400, PRODUCTION_REFUSED)
    if not call.grant.can_design:
        raise ApiError(400, NO_DESIGN_RIGHT)


def _uploaded_rows(call: ApiCall) -> list[dict[str, str]]:
    return parse_table(call.params.get("data"), data_format(call.params))


def _required_array(call: ApiCall, name: str) -> list[str]:
    items = call.params.array(name)
    if not items:
        raise ApiError(400, f"The parameter {name} is missing or empty")
    return items
