"""Flat record import: REDCap's checks on the rows, and its normal/overwrite merge.

The whole import is refused on any problem, so nothing is written. Problems about single values
come back as REDCap writes them: one ``"record","field","value","message"`` line each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redcap_emulator.design import Design
from redcap_emulator.record_rows import RowKey, RowValues
from redcap_emulator.values import check_value

RESERVED_COLUMNS = frozenset(
    {
        "redcap_event_name",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
        "redcap_data_access_group",
        "redcap_survey_identifier",
    }
)


class ImportRejected(Exception):
    """REDCap refuses the import; ``message`` is its error text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ImportRow:
    key: RowKey
    values: RowValues


@dataclass(frozen=True)
class Merge:
    """What an import changes: rows to write or delete, and the records it touched."""

    rows_to_save: dict[RowKey, RowValues]
    rows_to_delete: list[RowKey]
    changed_records: set[str]
    records: list[str]  # every record named by the import, in import order


def validate_import(
    design: Design, raw_rows: list[dict[str, str]], date_format: str
) -> list[ImportRow]:
    """The rows to merge, or ImportRejected with REDCap's error text."""
    if not raw_rows:
        raise ImportRejected("No data was provided to import")
    _reject_unknown_columns(design, raw_rows)
    _reject_missing_record_names(design, raw_rows)
    _reject_unknown_events(design, raw_rows)
    rows: list[ImportRow] = []
    problems: list[str] = []
    for raw in raw_rows:
        row, row_problems = _checked_row(design, raw, date_format)
        rows.append(row)
        problems += row_problems
    if problems:
        raise ImportRejected("\n".join(problems))
    return rows


def _reject_unknown_columns(design: Design, raw_rows: list[dict[str, str]]) -> None:
    known = {design.record_id_field} | RESERVED_COLUMNS
    unknown = [
        name
        for name in dict.fromkeys(name for row in raw_rows for name in row)
        if name not in known and design.column(name) is None
    ]
    if unknown:
        raise ImportRejected(
            "The following fields were not found in the project as real data fields: "
            + ", ".join(unknown)
        )


def _reject_missing_record_names(design: Design, raw_rows: list[dict[str, str]]) -> None:
    id_field = design.record_id_field
    if any(not row.get(id_field, "").strip() for row in raw_rows):
        raise ImportRejected(
            f"The record ID field ({id_field}) is missing or blank in one or more rows;"
            " every row must name its record"
        )


def _reject_unknown_events(design: Design, raw_rows: list[dict[str, str]]) -> None:
    if not design.info.longitudinal:
        return
    named = (row.get("redcap_event_name", "").strip() for row in raw_rows)
    invalid = [e for e in dict.fromkeys(named) if e and design.event(e) is None]
    if invalid:
        raise ImportRejected(
            "The following values of redcap_event_name are invalid: " + ", ".join(invalid)
        )
    if not design.events:
        raise ImportRejected("The project has no events to import data into")


def _checked_row(
    design: Design, raw: dict[str, str], date_format: str
) -> tuple[ImportRow, list[str]]:
    record = raw[design.record_id_field].strip()
    event = _row_event(design, raw)
    instrument = raw.get("redcap_repeat_instrument", "").strip()
    instance_text = raw.get("redcap_repeat_instance", "").strip()
    instance, problems = _row_instance(design, record, event, instrument, instance_text)
    values: RowValues = {}
    for name, raw_value in raw.items():
        column = design.column(name)
        if column is None or name == design.record_id_field:
            continue  # the record name and REDCap's pseudo-fields
        value, problem = check_value(column, raw_value.strip(), date_format)
        problem = problem or _placement_problem(design, event, instrument, column.form, name)
        if problem and value == "":
            continue  # a blank for a field that does not belong here changes nothing
        if problem:
            problems.append(problem_line(record, name, raw_value, problem))
        values[name] = value
    return ImportRow(RowKey(record, event, instrument, instance), values), problems


def _row_event(design: Design, raw: dict[str, str]) -> str:
    if not design.info.longitudinal:
        return ""
    # Without redcap_event_name REDCap imports into the first event.
    return raw.get("redcap_event_name", "").strip() or design.events[0].unique_name


def _row_instance(
    design: Design, record: str, event: str, instrument: str, instance_text: str
) -> tuple[int, list[str]]:
    problems = []
    if instrument and not design.is_repeating_form(event, instrument):
        problems.append(
            problem_line(
                record,
                "redcap_repeat_instrument",
                instrument,
                f"{instrument} is not a repeating instrument"
                + (f" in the event {event}" if event else "")
                + "; redcap_repeat_instrument must name a repeating instrument",
            )
        )
    if not instrument and instance_text and not design.is_repeating_event(event):
        problems.append(
            problem_line(
                record,
                "redcap_repeat_instance",
                instance_text,
                "redcap_repeat_instance must be blank on a row that is neither a repeating"
                " instrument nor a repeating event",
            )
        )
        return 1, problems
    if not instrument and not design.is_repeating_event(event):
        return 1, problems
    if instance_text.isdigit() and int(instance_text) > 0:
        return int(instance_text), problems
    problems.append(
        problem_line(
            record,
            "redcap_repeat_instance",
            instance_text,
            "redcap_repeat_instance must be a positive integer for a repeating instrument or event",
        )
    )
    return 1, problems


def _placement_problem(
    design: Design, event: str, instrument: str, form: str, name: str
) -> str | None:
    if not design.is_designated(event, form):
        return (
            f"This field ('{name}') is on the instrument {form}, which is not designated"
            f" for the event {event}"
        )
    if instrument and form != instrument:
        return f"This field ('{name}') is not on the repeating instrument {instrument} of this row"
    if not instrument and design.is_repeating_form(event, form):
        return (
            f"This field ('{name}') is on the repeating instrument {form}; its rows need"
            " redcap_repeat_instrument and redcap_repeat_instance"
        )
    return None


def problem_line(record: str, field: str, value: str, message: str) -> str:
    """One line of REDCap's import error: record, field, value and message, CSV-quoted."""
    return ",".join('"' + part.replace('"', '""') + '"' for part in (record, field, value, message))


def renumber(
    rows: list[ImportRow], first_number: int
) -> tuple[list[ImportRow], list[tuple[str, str]]]:
    """forceAutoNumber: give each record named in the import the next free number.

    Returns the renamed rows and the (new, original) record name pairs in import order.
    """
    names: dict[str, str] = {}
    for row in rows:
        names.setdefault(row.key.record, str(first_number + len(names)))
    renamed = [
        ImportRow(
            RowKey(names[r.key.record], r.key.event, r.key.instrument, r.key.instance), r.values
        )
        for r in rows
    ]
    return renamed, [(new, old) for old, new in names.items()]


def merge(
    existing: Mapping[RowKey, RowValues],
    known_records: set[str],
    rows: list[ImportRow],
    overwrite: bool,
) -> Merge:
    """Apply imported rows to stored ones: blanks are skipped ("normal") or erase ("overwrite")."""
    current: dict[RowKey, RowValues] = {}
    changed: set[str] = set()
    for row in rows:
        # An instrument instance comes with its event's own row (kept even when empty), which
        # holds the record in that event; instances of a repeating event are such rows.
        base = RowKey(row.key.record, row.key.event)
        for key in (base, row.key) if row.key.instrument else (row.key,):
            if key not in current:
                current[key] = dict(existing.get(key, {}))
                if key not in existing and not (key.instrument and not row.values):
                    changed.add(key.record)
        before = dict(current[row.key])
        _apply(current[row.key], row.values, overwrite)
        if current[row.key] != before:
            changed.add(row.key.record)
    records = list(dict.fromkeys(row.key.record for row in rows))
    changed |= {r for r in records if r not in known_records}
    empty_instances = [k for k, v in current.items() if k.instrument and not v]
    return Merge(
        rows_to_save={
            k: v for k, v in current.items() if k not in empty_instances and v != existing.get(k)
        },
        rows_to_delete=[k for k in empty_instances if k in existing],
        changed_records=changed,
        records=records,
    )


def _apply(values: RowValues, incoming: RowValues, overwrite: bool) -> None:
    for name, value in incoming.items():
        if value != "":
            values[name] = value
        elif overwrite:
            values.pop(name, None)
