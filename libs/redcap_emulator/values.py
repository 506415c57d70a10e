"""Checking one imported value against its field, as REDCap's record import does.

Blank values always pass (whether they erase is the merge's business). Dates are stored as
REDCap stores them (``YYYY-MM-DD``), whatever ``dateFormat`` the import declared.
"""

from __future__ import annotations

import re
from datetime import datetime

from redcap_emulator.design import Column

INVALID_FORMAT = (
    "The value you provided could not be validated because it does not follow the expected"
    " format. Please try again."
)
_INTEGER = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?")
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_DATE_ORDERS = {"YMD": "%Y-%m-%d", "MDY": "%m-%d-%Y", "DMY": "%d-%m-%Y"}
_DATETIME_SUFFIXES = {"datetime": " %H:%M", "datetime_seconds": " %H:%M:%S"}
_DATE_SHAPES = {
    "YMD": re.compile(r"\d{4}-\d{2}-\d{2}"),
    "MDY": re.compile(r"\d{2}-\d{2}-\d{4}"),
    "DMY": re.compile(r"\d{2}-\d{2}-\d{4}"),
}


def check_value(column: Column, value: str, date_format: str) -> tuple[str, str | None]:
    """The value to store and, if it is not acceptable, REDCap's reason."""
    if value == "":
        return value, None
    if column.is_form_status:
        return value, _choice_problem(value, ("0", "1", "2"), column.name)
    field = column.field
    assert field is not None
    if column.choice:
        return value, _choice_problem(value, ("0", "1"), column.name)
    if field.field_type in ("dropdown", "radio", "yesno", "truefalse"):
        return value, _choice_problem(value, tuple(field.choices()), column.name)
    if field.field_type == "text":
        return _checked_text(field.validation, value, date_format)
    return value, None


def _choice_problem(value: str, allowed: tuple[str, ...], name: str) -> str | None:
    return None if value in allowed else f"The value is not a valid category for {name}"


def _checked_text(validation: str, value: str, date_format: str) -> tuple[str, str | None]:
    if validation == "integer":
        return value, None if _INTEGER.fullmatch(value) else INVALID_FORMAT
    if validation == "number":
        return value, None if _NUMBER.fullmatch(value) else INVALID_FORMAT
    if validation == "time":
        return value, None if _TIME.fullmatch(value) else INVALID_FORMAT
    kind, _, _order = validation.rpartition("_")
    if kind in ("date", *_DATETIME_SUFFIXES):
        return _checked_date(kind, value, date_format)
    return value, None


def _checked_date(kind: str, value: str, date_format: str) -> tuple[str, str | None]:
    """Dates and datetimes in the import's ``dateFormat`` order, stored as Y-M-D."""
    date_part, _, time_part = value.replace("/", "-").partition(" ")
    suffix = _DATETIME_SUFFIXES.get(kind, "")
    if not _DATE_SHAPES[date_format].fullmatch(date_part) or bool(time_part) != bool(suffix):
        return value, INVALID_FORMAT
    text = f"{date_part} {time_part}" if suffix else date_part
    try:
        parsed = datetime.strptime(text, _DATE_ORDERS[date_format] + suffix)
    except ValueError:
        return value, INVALID_FORMAT
    return parsed.strftime("%Y-%m-%d" + suffix), None
