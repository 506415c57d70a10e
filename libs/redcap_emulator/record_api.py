"""API handlers for ``content=record`` (export, import, delete) and ``generateNextRecordName``."""

from __future__ import annotations

import re

from redcap_emulator import store_data
from redcap_emulator.design import Design
from redcap_emulator.filter_logic import FilterLogicError, Logic, field_refs, parse_filter_logic
from redcap_emulator.metadata import reject_unknown_values
from redcap_emulator.protocol import (
    XML_HEADER,
    XML_TYPE,
    ApiCall,
    ApiError,
    ApiResponse,
    count_response,
    data_format,
    json_response,
    parse_table,
    table_response,
    text_response,
)
from redcap_emulator.record_rows import RowKey, next_record_number
from redcap_emulator.records_export import Labelling, Selection, export_columns, flat_rows
from redcap_emulator.records_import import ImportRejected, merge, renumber, validate_import

_TIMESTAMP = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?"
)
_MISSING_RECORDS = (
    "One or more of the records provided cannot be deleted because they do not exist in the"
    " project. The following records do not exist:"
)
_NO_DATA_FIELDS = (
    'The variables provided in the parameter "fields" are not valid fields that contain data.'
    " This might happen if you only provided variables for Descriptive fields."
)


def export_records(call: ApiCall) -> ApiResponse:
    fmt = data_format(call.params)
    _require_flat(call)
    selection = _selection(call.design, call)
    labelling = Labelling(
        labels=call.params.get("rawOrLabel").strip().lower() == "label",
        checkbox_labels=call.params.flag("exportCheckboxLabel"),
    )
    logic = _filter_logic(call.design, call.params.get("filterLogic"))
    records = _chosen_records(call)
    stored = store_data.load_rows(call.conn, call.project_id, records)
    rows = flat_rows(call.design, stored, records, selection, labelling, logic)
    return table_response(rows, export_columns(call.design, selection), fmt)


def _require_flat(call: ApiCall) -> None:
    if call.params.get("type", "flat").strip().lower() not in ("", "flat"):
        raise ApiError(400, "The REDCap emulator supports type=flat only")


def _selection(design: Design, call: ApiCall) -> Selection:
    fields = call.params.array("fields")
    forms = call.params.array("forms")
    known_names = [f.name for f in design.fields] + [
        c for form in design.forms for c in design.form_columns(form)
    ]
    reject_unknown_values("fields", fields, known_names)
    reject_unknown_values("forms", forms, list(design.forms))
    # REDCap drops Descriptive fields (they hold no data) from the field list.
    data_fields = [n for n in fields if (f := design.field(n)) is None or f.holds_data]
    if fields and not data_fields:
        raise ApiError(400, _NO_DATA_FIELDS)
    events = call.params.array("events") if design.info.longitudinal else []
    reject_unknown_values("events", events, list(design.event_names))
    return Selection(tuple(data_fields), tuple(forms), tuple(events))


def _filter_logic(design: Design, text: str) -> Logic | None:
    if not text.strip():
        return None
    try:
        logic = parse_filter_logic(text)
    except FilterLogicError as err:
        raise ApiError(400, f"The parameter filterLogic is not valid: {err}") from err
    for ref in field_refs(logic):
        if (
            design.field(ref.field) is None
            and design.column(ref.field) is None
            and not (ref.field.startswith("redcap_"))
        ):
            raise ApiError(
                400, f"The parameter filterLogic refers to an unknown field: {ref.field}"
            )
        if ref.event and design.event(ref.event) is None:
            raise ApiError(
                400, f"The parameter filterLogic refers to an unknown event: {ref.event}"
            )
    return logic


def _chosen_records(call: ApiCall) -> list[str]:
    """Records asked for (all if none), narrowed to those modified in dateRangeBegin/End."""
    records = store_data.record_names(call.conn, call.project_id)
    asked = set(call.params.array("records"))
    if asked:
        records = [r for r in records if r in asked]
    begin = _range_bound(call, "dateRangeBegin", "0000-01-01 00:00:00", end=False)
    end = _range_bound(call, "dateRangeEnd", "9999-12-31 23:59:59", end=True)
    if call.params.get("dateRangeBegin").strip() or call.params.get("dateRangeEnd").strip():
        modified = store_data.records_modified_between(call.conn, call.project_id, begin, end)
        records = [r for r in records if r in modified]
    return records


def _range_bound(call: ApiCall, name: str, default: str, end: bool) -> str:
    text = call.params.get(name).strip()
    if not text:
        return default
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ApiError(
            400, f'The value of the parameter "{name}" must be a date/time like YYYY-MM-DD HH:MM:SS'
        )
    year, month, day, hour, minute, second = match.groups()
    # A date alone covers the whole day, as in REDCap.
    time = (
        (hour, minute, second or "0") if hour else (("23", "59", "59") if end else ("0", "0", "0"))
    )
    return f"{year}-{int(month):02d}-{int(day):02d} " + ":".join(f"{int(t):02d}" for t in time)


def import_records(call: ApiCall) -> ApiResponse:
    fmt = data_format(call.params)
    _require_flat(call)
    raw_rows = parse_table(call.params.get("data"), fmt)
    date_format = call.params.get("dateFormat").strip().upper()
    try:
        rows = validate_import(
            call.design, raw_rows, date_format if date_format in ("MDY", "DMY") else "YMD"
        )
    except ImportRejected as err:
        raise ApiError(400, err.message) from err
    known = set(store_data.record_names(call.conn, call.project_id))
    pairs: list[tuple[str, str]] = []
    if call.params.flag("forceAutoNumber"):
        rows, pairs = renumber(rows, next_record_number(list(known)))
    records = list(dict.fromkeys(r.key.record for r in rows))
    existing = store_data.load_rows(call.conn, call.project_id, records)
    result = merge(
        existing, known, rows, call.params.get("overwriteBehavior").strip().lower() == "overwrite"
    )
    now = call.now.strftime("%Y-%m-%d %H:%M:%S")
    store_data.touch_records(call.conn, call.project_id, result.changed_records, now)
    store_data.save_rows(call.conn, call.project_id, result.rows_to_save)
    store_data.delete_rows(call.conn, call.project_id, result.rows_to_delete)
    return _import_answer(call, result.records, pairs or [(r, r) for r in result.records])


def _import_answer(call: ApiCall, records: list[str], pairs: list[tuple[str, str]]) -> ApiResponse:
    content, fmt = call.params.get("returnContent", "count").strip().lower(), call.return_format
    if content == "nothing":
        return text_response("")
    if content in ("ids", "auto_ids"):
        items = records if content == "ids" else [f"{new},{old}" for new, old in pairs]
        if fmt == "json":
            return json_response(items)
        if fmt == "csv":
            return text_response("\n".join(["id", *items]) + "\n")
        body = "".join(f"<id>{item}</id>" for item in items)
        return ApiResponse(200, f"{XML_HEADER}<ids>{body}</ids>".encode(), XML_TYPE)
    if fmt == "json":
        return json_response({"count": len(records)})
    return count_response(len(records), fmt)


def delete_records(call: ApiCall) -> ApiResponse:
    if not call.grant.can_import:
        raise ApiError(
            400, "Deleting records needs both API Import/Update and Delete Record privileges"
        )
    records = list(dict.fromkeys(call.params.array("records")))
    if not records:
        raise ApiError(400, "No records were provided to delete (use records[0], records[1], ...)")
    known = set(store_data.record_names(call.conn, call.project_id))
    missing = [r for r in records if r not in known]
    if missing:
        raise ApiError(400, f"{_MISSING_RECORDS} {', '.join(missing)}")
    instrument, event = call.params.get("instrument").strip(), call.params.get("event").strip()
    if not instrument and not event:
        store_data.delete_records(call.conn, call.project_id, records)
        return count_response(len(records), call.return_format)
    return count_response(_delete_partly(call, records, instrument, event), call.return_format)


def _delete_partly(call: ApiCall, records: list[str], instrument: str, event: str) -> int:
    """Delete one instrument's data (one instance when it repeats) and/or one event's data."""
    design = call.design
    if instrument and instrument not in design.forms:
        raise ApiError(400, f"The instrument {instrument!r} does not exist in the project")
    if event and design.event(event) is None:
        raise ApiError(400, f"The event {event!r} does not exist in the project")
    instance_text = call.params.get("repeat_instance").strip() or "1"
    instance = int(instance_text) if instance_text.isdigit() else 1
    stored = store_data.load_rows(call.conn, call.project_id, records)
    emptied: list[RowKey] = []
    trimmed: dict[RowKey, dict[str, str]] = {}
    for key, values in stored.items():
        if event and key.event != event:
            continue
        if not instrument or (key.instrument == instrument and key.instance == instance):
            emptied.append(key)
        elif not key.instrument and not design.is_repeating_form(key.event, instrument):
            columns = set(design.form_columns(instrument))
            if columns & set(values):
                trimmed[key] = {k: v for k, v in values.items() if k not in columns}
    store_data.delete_rows(call.conn, call.project_id, emptied)
    store_data.save_rows(call.conn, call.project_id, trimmed)
    changed = {k.record for k in [*emptied, *trimmed]}
    store_data.touch_records(
        call.conn, call.project_id, changed, call.now.strftime("%Y-%m-%d %H:%M:%S")
    )
    return len(changed)


def generate_next_record_name(call: ApiCall) -> ApiResponse:
    # Nothing is reserved: callers asking at the same time get the same name, as in REDCap.
    return text_response(
        str(next_record_number(store_data.record_names(call.conn, call.project_id)))
    )
