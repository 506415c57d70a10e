"""The data dictionary: import (replacing it), export, and the lists derived from it.

CSV dictionaries are accepted with REDCap's API column names (``field_name,form_name,...``)
or with the column titles of the Data Dictionary file REDCap offers for download.
"""

from __future__ import annotations

import csv
import io
import re

from redcap_emulator.design import METADATA_COLUMNS, Design, Field, parse_choices
from redcap_emulator.protocol import ApiError, parse_table

# Column titles of REDCap's downloadable Data Dictionary, in METADATA_COLUMNS order.
DICTIONARY_FILE_TITLES: tuple[str, ...] = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)
FIELD_TYPES = frozenset(
    {
        "text",
        "notes",
        "dropdown",
        "radio",
        "checkbox",
        "yesno",
        "truefalse",
        "calc",
        "file",
        "descriptive",
        "slider",
        "sql",
    }
)
RESERVED_NAMES = frozenset(
    {
        "redcap_event_name",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
        "redcap_data_access_group",
        "redcap_survey_identifier",
    }
)
_VARIABLE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_NOT_EXPORTED_AS_FIELD_NAMES = frozenset({"calc", "file", "descriptive"})


def parse_dictionary(data: str, fmt: str) -> list[dict[str, str]]:
    """Dictionary rows with every metadata key present (missing ones blank)."""
    rows = _dictionary_file_rows(data) if fmt == "csv" else None
    if rows is None:
        rows = parse_table(data, fmt)
    return [{key: (row.get(key) or "").strip() for key in METADATA_COLUMNS} for row in rows]


def _dictionary_file_rows(data: str) -> list[dict[str, str]] | None:
    """Rows of a CSV that uses the Data Dictionary file's titles; None for API-style CSV."""
    records = list(csv.reader(io.StringIO(data.lstrip("\ufeff"))))
    if not records or records[0][:1] != [DICTIONARY_FILE_TITLES[0]]:
        return None
    return [dict(zip(METADATA_COLUMNS, record, strict=False)) for record in records[1:] if record]


def dictionary_problems(rows: list[dict[str, str]]) -> list[str]:
    """What REDCap would refuse in an uploaded dictionary (empty when it is acceptable)."""
    if not rows:
        return ["The data dictionary contains no fields"]
    problems: list[str] = []
    seen_fields: set[str] = set()
    finished_forms: list[str] = []
    for number, row in enumerate(rows, start=1):
        problems += [f"Row {number}: {p}" for p in _row_problems(row, seen_fields)]
        seen_fields.add(row["field_name"])
        form = row["form_name"]
        if finished_forms and finished_forms[-1] != form and form in finished_forms:
            problems.append(f"Row {number}: the fields of instrument {form} are not contiguous")
        if not finished_forms or finished_forms[-1] != form:
            finished_forms.append(form)
    completes = {f"{form}_complete" for form in finished_forms}
    problems += [
        f"The field name {name} is reserved for the status of an instrument"
        for name in sorted(seen_fields & completes)
    ]
    if rows[0]["field_type"] != "text":
        problems.append("The first field (the record ID field) must be a text field")
    return problems


def _row_problems(row: dict[str, str], seen_fields: set[str]) -> list[str]:
    name, form, field_type = row["field_name"], row["form_name"], row["field_type"]
    problems: list[str] = []
    if not _VARIABLE_NAME.fullmatch(name) or len(name) > 100:
        problems.append(
            f'the variable name "{name}" is not valid (lower-case letters, digits and'
            " underscores, starting with a letter)"
        )
    elif name in seen_fields:
        problems.append(f"the variable name {name} is used more than once")
    elif name in RESERVED_NAMES:
        problems.append(f"the variable name {name} is reserved by REDCap")
    if not _VARIABLE_NAME.fullmatch(form):
        problems.append(f'the form name "{form}" is not valid')
    if field_type not in FIELD_TYPES:
        problems.append(f'the field type "{field_type}" is not valid')
    elif field_type in ("dropdown", "radio", "checkbox"):
        problems += _choice_problems(row["select_choices_or_calculations"])
    return problems


def _choice_problems(text: str) -> list[str]:
    items = [item for item in text.split("|") if item.strip()]
    choices = parse_choices(text)
    if not choices:
        return ["a multiple-choice field needs choices written as 'code, label | code, label'"]
    if len(choices) != len(items):
        return ["the choice codes of the field are not unique"]
    return []


def export_metadata(design: Design, fields: list[str], forms: list[str]) -> list[dict[str, str]]:
    """Dictionary rows, all of them or those of the ``fields`` and ``forms`` asked for."""
    reject_unknown_values("fields", fields, [f.name for f in design.fields])
    reject_unknown_values("forms", forms, list(design.forms))
    chosen = [
        f
        for f in design.fields
        if (not fields and not forms) or f.name in fields or f.form in forms
    ]
    return [{key: f.attributes.get(key, "") for key in METADATA_COLUMNS} for f in chosen]


def export_instruments(design: Design) -> list[dict[str, str]]:
    return [
        {"instrument_name": form, "instrument_label": design.form_label(form)}
        for form in design.forms
    ]


def export_field_names(design: Design, only: str) -> list[dict[str, str]]:
    """REDCap's exportFieldNames: one row per import/export column of each data field."""
    if only and design.field(only) is None:
        raise ApiError(400, f'The field "{only}" does not exist in the project')
    rows: list[dict[str, str]] = []
    for f in design.fields:
        if (only and f.name != only) or f.field_type in _NOT_EXPORTED_AS_FIELD_NAMES:
            continue
        rows += _field_name_rows(f)
    return rows


def _field_name_rows(f: Field) -> list[dict[str, str]]:
    if not f.is_checkbox:
        return [{"original_field_name": f.name, "choice_value": "", "export_field_name": f.name}]
    return [
        {"original_field_name": f.name, "choice_value": code, "export_field_name": column}
        for code, column in zip(f.choices(), f.columns(), strict=True)
    ]


def reject_unknown_values(parameter: str, asked: list[str], known: list[str]) -> None:
    """REDCap's 400 for array parameters naming things the project does not have."""
    unknown = [name for name in dict.fromkeys(asked) if name not in known]
    if unknown:
        quoted = ", ".join(f"'{name}'" for name in unknown)
        raise ApiError(
            400, f'The following values in the parameter "{parameter}" are not valid: {quoted}'
        )
