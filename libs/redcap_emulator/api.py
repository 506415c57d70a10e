"""One API request from form parameters to response, in the order REDCap's API/index.php
checks things: token, content, action and the right it needs, then the handler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from redcap_emulator import design_api, record_api
from redcap_emulator.form_params import FormParams
from redcap_emulator.protocol import (
    INVALID_CONTENT,
    NO_API_ACCESS,
    NO_DELETE_RIGHT,
    NO_EXPORT_RIGHT,
    NO_IMPORT_RIGHT,
    ApiCall,
    ApiError,
    ApiResponse,
    error_response,
    return_format,
)
from redcap_emulator.store import Store, find_token
from redcap_emulator.store_design import load_design
from redcap_emulator.tokens import TokenGrant

Handler = Callable[[ApiCall], ApiResponse]

# (content, action) -> handler; imports and deletes run in a write transaction.
ROUTES: dict[tuple[str, str], Handler] = {
    ("version", "export"): design_api.export_version,
    ("project", "export"): design_api.export_project,
    ("metadata", "export"): design_api.export_metadata,
    ("metadata", "import"): design_api.import_metadata,
    ("instrument", "export"): design_api.export_instruments,
    ("exportFieldNames", "export"): design_api.export_field_names,
    ("arm", "export"): design_api.export_arms,
    ("arm", "import"): design_api.import_arms,
    ("arm", "delete"): design_api.delete_arms,
    ("event", "export"): design_api.export_events,
    ("event", "import"): design_api.import_events,
    ("event", "delete"): design_api.delete_events,
    ("formEventMapping", "export"): design_api.export_form_events,
    ("formEventMapping", "import"): design_api.import_form_events,
    ("repeatingFormsEvents", "export"): design_api.export_repeating,
    ("repeatingFormsEvents", "import"): design_api.import_repeating,
    ("generateNextRecordName", "export"): record_api.generate_next_record_name,
    ("record", "export"): record_api.export_records,
    ("record", "import"): record_api.import_records,
    ("record", "delete"): record_api.delete_records,
}
# Contents REDCap has but the emulator does not: refused with a message saying so.
UNEMULATED_CONTENT = frozenset(
    {
        "file",
        "filesize",
        "fileinfo",
        "user",
        "userRole",
        "userRoleMapping",
        "dag",
        "userDagMapping",
        "project_settings",
        "report",
        "authkey",
        "pdf",
        "surveyLink",
        "surveyQueueLink",
        "surveyReturnCode",
        "participantList",
        "appRightsCheck",
        "fieldValidation",
        "attachment",
        "project_xml",
        "log",
        "fileRepository",
    }
)
_ACTION_CONTENTS = frozenset({"event", "arm"})  # contents whose action is an explicit parameter
_RIGHTS: dict[str, tuple[str, str]] = {
    "export": ("can_export", NO_EXPORT_RIGHT),
    "import": ("can_import", NO_IMPORT_RIGHT),
    "delete": ("can_delete", NO_DELETE_RIGHT),
}


@dataclass(frozen=True)
class RequestRecord:
    """What the request log keeps of a request: never the token, never the data."""

    content: str
    action: str
    project_id: int | None
    status: int


def handle_api_request(
    store: Store, params: FormParams, now: datetime
) -> tuple[ApiResponse, RequestRecord]:
    content = params.get("content").strip()
    action = request_action(content, params)
    project_id: int | None = None
    try:
        grant = _authorised(store, params, content, action)
        project_id = grant.project_id
        handler = ROUTES.get((content, action))
        if handler is None:
            raise ApiError(400, f'The value of the parameter "action" ({action}) is not valid')
        response = _run(store, handler, grant, params, now, writes=action != "export")
    except ApiError as err:
        response = error_response(err, return_format(params))
    return response, RequestRecord(content, action, project_id, response.status)


def request_action(content: str, params: FormParams) -> str:
    """export, import or delete, decided as REDCap decides it."""
    if content in _ACTION_CONTENTS:
        return params.get("action").strip().lower() or "export"
    if content == "record" and params.get("action").strip().lower() == "delete":
        return "delete"
    if content == "version" or not params.has("data"):
        return "export"
    return "import"


def _authorised(store: Store, params: FormParams, content: str, action: str) -> TokenGrant:
    with store.reading() as conn:
        grant = find_token(conn, params.get("token").strip())
    if grant is None:
        raise ApiError(403, NO_API_ACCESS)
    if content in UNEMULATED_CONTENT:
        raise ApiError(400, f'The REDCap emulator does not support content "{content}"')
    if content not in {c for c, _ in ROUTES}:
        raise ApiError(400, INVALID_CONTENT)
    right, refusal = _RIGHTS.get(action, ("can_export", NO_EXPORT_RIGHT))
    if not getattr(grant, right):
        raise ApiError(403, refusal)
    return grant


def _run(
    store: Store,
    handler: Handler,
    grant: TokenGrant,
    params: FormParams,
    now: datetime,
    writes: bool,
) -> ApiResponse:
    transaction = store.writing() if writes else store.reading()
    with transaction as conn:
        call = ApiCall(conn, load_design(conn, grant.project_id), grant, params, now)
        return handler(call)
