"""The vocabulary of the API: a call in, a response out, REDCap's error bodies and formats.

REDCap writes errors in ``returnFormat`` if given, else in ``format``, else as XML; JSON errors
are ``{"error": "..."}``, CSV errors start with ``ERROR:`` (PyCap relies on both).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape

from redcap_emulator.design import Design
from redcap_emulator.form_params import FormParams
from redcap_emulator.tokens import TokenGrant

# REDCap's own texts, where clients may match on them.
NO_API_ACCESS = "You do not have permissions to use the API"
NO_EXPORT_RIGHT = "You do not have API Export privileges"
NO_IMPORT_RIGHT = "You do not have API Import/Update privileges"
NO_DELETE_RIGHT = "You do not have Delete Record privileges"
INVALID_CONTENT = 'The value of the parameter "content" is not valid'
# Texts whose exact REDCap wording is not public; the HTTP status matches REDCap's.
NO_DESIGN_RIGHT = "You do not have Project Design and Setup privileges"
PRODUCTION_REFUSED = (
    "This method cannot be used while the project is in production status"
    " (it is only available for projects in Development status)"
)
BADLY_FORMATTED_DATA = "The data being imported is not formatted correctly"

JSON_TYPE = "application/json; charset=utf-8"
CSV_TYPE = "text/csv; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
XML_HEADER = '<?xml version="1.0" encoding="UTF-8" ?>'

Table = Sequence[Mapping[str, object]]


class ApiError(Exception):
    """A request REDCap would refuse: HTTP ``status`` and the error text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class ApiCall:
    """One authorised request, inside its transaction."""

    conn: sqlite3.Connection
    design: Design
    grant: TokenGrant
    params: FormParams
    now: datetime

    @property
    def project_id(self) -> int:
        return self.design.info.project_id

    @property
    def return_format(self) -> str:
        return return_format(self.params)


def return_format(params: FormParams) -> str:
    """The format of error messages and import results (REDCap's ``returnFormat`` rule)."""
    chosen = (params.get("returnFormat") or params.get("format")).strip().lower()
    return chosen if chosen in ("json", "csv") else "xml"


def data_format(params: FormParams) -> str:
    """The ``format`` of exported or imported data; the emulator speaks JSON and CSV only."""
    chosen = params.get("format", "xml").strip().lower() or "xml"
    if chosen not in ("json", "csv"):
        raise ApiError(
            400, f'The REDCap emulator does not support format "{chosen}" (use json or csv)'
        )
    return chosen


def error_response(error: ApiError, fmt: str) -> ApiResponse:
    if fmt == "json":
        return ApiResponse(error.status, _json_bytes({"error": error.message}), JSON_TYPE)
    if fmt == "csv":
        return ApiResponse(error.status, f"ERROR: {error.message}".encode(), TEXT_TYPE)
    body = f"{XML_HEADER}\n<hash>\n  <error>{escape(error.message)}</error>\n</hash>"
    return ApiResponse(error.status, body.encode(), XML_TYPE)


def json_response(value: object) -> ApiResponse:
    return ApiResponse(200, _json_bytes(value), JSON_TYPE)


def text_response(text: str) -> ApiResponse:
    return ApiResponse(200, text.encode(), TEXT_TYPE)


def table_response(rows: Table, columns: Sequence[str], fmt: str) -> ApiResponse:
    """A list of objects as JSON, or as CSV with ``columns`` as the header."""
    if fmt == "json":
        return json_response([dict(row) for row in rows])
    return ApiResponse(200, csv_text(rows, columns).encode(), CSV_TYPE)


def object_response(value: Mapping[str, object], fmt: str) -> ApiResponse:
    """A single object (project information) as JSON, or as a one-row CSV."""
    if fmt == "json":
        return json_response(dict(value))
    return ApiResponse(200, csv_text([value], list(value)).encode(), CSV_TYPE)


def count_response(count: int, fmt: str) -> ApiResponse:
    """The number of items imported or deleted, as REDCap answers design imports and deletes."""
    if fmt == "json":
        return json_response(count)
    if fmt == "csv":
        return text_response(str(count))
    return ApiResponse(200, f"{XML_HEADER}<count>{count}</count>".encode(), XML_TYPE)


def csv_text(rows: Table, columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def parse_table(data: str, fmt: str) -> list[dict[str, str]]:
    """Uploaded rows (JSON array of objects, or CSV with a header) with every value as text."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(data.lstrip("\ufeff")))
        return [{k.strip(): (v or "") for k, v in row.items() if k is not None} for row in reader]
    try:
        decoded = json.loads(data)
    except json.JSONDecodeError as err:
        raise ApiError(400, f"{BADLY_FORMATTED_DATA}: {err}") from err
    if isinstance(decoded, dict):
        decoded = [decoded]
    if not isinstance(decoded, list) or not all(isinstance(r, dict) for r in decoded):
        raise ApiError(400, f"{BADLY_FORMATTED_DATA}: expected an array of objects")
    return [{str(k): scalar_text(v) for k, v in row.items()} for row in decoded]


def scalar_text(value: object) -> str:
    """A JSON scalar as REDCap stores it: text, numbers in their plain form, null as blank."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ApiError(400, f"{BADLY_FORMATTED_DATA}: nested values are not allowed")


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
