"""Flat record export: the rows and columns REDCap gives for ``type=flat``.

Per record and event: the event's own row, then one row per instance of each repeating
instrument that has columns in the export. Fields of other instruments are blank strings;
checkbox options and instrument status fields default to ``"0"`` where they belong.
Filter logic is applied row by row on raw values, to all fields (not only exported ones).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redcap_emulator.design import FORM_STATUS_LABELS, Column, Design, checkbox_column
from redcap_emulator.filter_logic import FieldRef, Logic, Lookup, evaluate
from redcap_emulator.record_rows import RowKey, RowValues

FlatRow = dict[str, object]
_ROW_INFO = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")


@dataclass(frozen=True)
class Selection:
    fields: tuple[str, ...] = ()
    forms: tuple[str, ...] = ()
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Labelling:
    labels: bool = False  # rawOrLabel=label
    checkbox_labels: bool = False  # exportCheckboxLabel


def export_columns(design: Design, selection: Selection) -> list[str]:
    """Column names in REDCap's order: record ID, row identity, then data by instrument."""
    wanted = _wanted_columns(design, selection)
    columns = [design.record_id_field]
    if design.info.longitudinal:
        columns.append("redcap_event_name")
    if design.has_repeating:
        columns += ["redcap_repeat_instrument", "redcap_repeat_instance"]
    for form in design.forms:
        columns += [c for c in design.form_columns(form) if c in wanted and c not in columns]
    return columns


def _wanted_columns(design: Design, selection: Selection) -> set[str]:
    every_form = not selection.fields and not selection.forms
    wanted = {
        c
        for form in design.forms
        if every_form or form in selection.forms
        for c in design.form_columns(form)
    }
    for name in selection.fields:
        field = design.field(name)
        wanted |= set(field.columns()) if field else {name}
    return wanted


def flat_rows(
    design: Design,
    stored: Mapping[RowKey, RowValues],
    records: Sequence[str],
    selection: Selection,
    labelling: Labelling,
    logic: Logic | None = None,
) -> list[FlatRow]:
    columns = export_columns(design, selection)
    forms_exported = {
        column.form for name in columns[1:] if (column := design.column(name)) is not None
    }
    by_record: dict[str, dict[RowKey, RowValues]] = defaultdict(dict)
    for key, values in stored.items():
        by_record[key.record][key] = values
    rows: list[FlatRow] = []
    for record in records:
        record_rows = by_record.get(record, {})
        for key in _row_keys(design, record_rows, selection, forms_exported):
            if logic is None or evaluate(logic, _lookup(design, record_rows, key)):
                rows.append(_render(design, key, record_rows.get(key, {}), columns, labelling))
    return rows


def _row_keys(
    design: Design, record_rows: Mapping[RowKey, RowValues], selection: Selection, forms: set[str]
) -> list[RowKey]:
    keys: list[RowKey] = []
    for event in design.event_names:
        if selection.events and event not in selection.events:
            continue
        in_event = sorted(k for k in record_rows if k.event == event)
        if not in_event:
            continue
        keys += [k for k in in_event if not k.instrument]
        for form in design.forms:
            if form in forms and design.is_repeating_form(event, form):
                keys += sorted(
                    (k for k in in_event if k.instrument == form), key=lambda k: k.instance
                )
    return keys


def _belongs(design: Design, key: RowKey, form: str) -> bool:
    """Whether ``form``'s fields are part of the row ``key``."""
    if not design.is_designated(key.event, form):
        return False
    if key.instrument:
        return form == key.instrument
    return not design.is_repeating_form(key.event, form)


def _render(
    design: Design, key: RowKey, values: RowValues, columns: list[str], labelling: Labelling
) -> FlatRow:
    repeats = bool(key.instrument) or design.is_repeating_event(key.event)
    identity: dict[str, object] = {
        "redcap_event_name": design.event_label(key.event) if labelling.labels else key.event,
        "redcap_repeat_instrument": (
            design.form_label(key.instrument)
            if labelling.labels and key.instrument
            else key.instrument
        ),
        "redcap_repeat_instance": key.instance if repeats else "",
    }
    row: FlatRow = {design.record_id_field: key.record}
    for name in columns[1:]:
        column = design.column(name)
        if name in _ROW_INFO:
            row[name] = identity[name]
        elif column is None or not _belongs(design, key, column.form):
            row[name] = ""
        else:
            raw = values.get(name, _default(column))
            row[name] = _label(column, raw, labelling) if labelling.labels else raw
    return row


def _default(column: Column) -> str:
    return "0" if column.is_form_status or column.choice else ""


def _label(column: Column, raw: str, labelling: Labelling) -> str:
    if column.is_form_status:
        return FORM_STATUS_LABELS.get(raw, raw)
    assert column.field is not None
    choices = column.field.choices()
    if column.choice:
        if labelling.checkbox_labels:
            return choices.get(column.choice, column.choice) if raw == "1" else ""
        return "Checked" if raw == "1" else "Unchecked"
    return choices.get(raw, raw) if choices else raw


def _lookup(design: Design, record_rows: Mapping[RowKey, RowValues], key: RowKey) -> Lookup:
    """The raw value of a field reference as seen from the row ``key``."""

    def lookup(ref: FieldRef) -> str:
        if ref.field in _ROW_INFO and not ref.event:
            return {
                "redcap_event_name": key.event,
                "redcap_repeat_instrument": key.instrument,
                "redcap_repeat_instance": str(key.instance),
            }[ref.field]
        name = checkbox_column(ref.field, ref.choice) if ref.choice else ref.field
        column = design.column(name) or design.column(ref.field)
        if column is None:
            return key.record if ref.field == design.record_id_field else ""
        event = ref.event or key.event
        if ref.field == design.record_id_field:
            return key.record
        if key.instrument == column.form and event == key.event:
            source = record_rows.get(key, {})
        elif design.is_repeating_form(event, column.form):
            return ""  # another repeating instrument: no single value to compare
        else:
            instance = key.instance if event == key.event and not key.instrument else 1
            source = record_rows.get(RowKey(key.record, event, "", instance), {})
        return source.get(column.name, "0" if column.choice else "")

    return lookup
