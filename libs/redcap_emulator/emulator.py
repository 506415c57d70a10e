"""The emulator's administration (projects, tokens, request log): a Python API, not HTTP."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from redcap_emulator import store, store_design
from redcap_emulator.api import RequestRecord, handle_api_request
from redcap_emulator.design import METADATA_COLUMNS, Arm, Event
from redcap_emulator.form_params import FormParams, parse_form_body
from redcap_emulator.protocol import ApiResponse
from redcap_emulator.tokens import TokenGrant, is_token_shaped, new_token

# A new REDCap project starts with this one-field dictionary, as real REDCap does.
FIRST_INSTRUMENT = "my_first_instrument"
DEFAULT_DICTIONARY = [
    {
        "field_name": "record_id",
        "form_name": FIRST_INSTRUMENT,
        "field_type": "text",
        "field_label": "Record ID",
    }
]
DEFAULT_EVENT = Event(0, "event_1_arm_1", "Event 1", 1)
REQUEST_LOG_LENGTH = 10_000


class Emulator:
    """REDCap projects kept in one SQLite file, and the log of API requests served.

    Args:
        db_path: the database file (created with its directory if missing).
        clock: gives "now" for creation and last-modified times (REDCap uses server local time).
    """

    def __init__(self, db_path: str | Path, clock: Callable[[], datetime] = datetime.now) -> None:
        self.store = store.Store(Path(db_path))
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._recent: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_LENGTH)

    def create_project(
        self,
        title: str,
        *,
        longitudinal: bool = False,
        production: bool = False,
        record_autonumbering: bool = True,
    ) -> int:
        """A new project with REDCap's starting dictionary; returns its project id.

        A longitudinal project gets arm 1 with event ``event_1_arm_1``, to which the first
        instrument is designated.
        """
        now = self._now_text()
        with self.store.writing() as conn:
            project_id = store.insert_project(
                conn, title, longitudinal, production, record_autonumbering, now
            )
            rows = [
                {key: row.get(key, "") for key in METADATA_COLUMNS} for row in DEFAULT_DICTIONARY
            ]
            store_design.save_dictionary(conn, project_id, rows)
            if longitudinal:
                store_design.save_arm(conn, project_id, Arm(1, "Arm 1"))
                store_design.save_event(conn, project_id, DEFAULT_EVENT)
                store_design.replace_designations(
                    conn,
                    project_id,
                    [DEFAULT_EVENT.unique_name],
                    [(DEFAULT_EVENT.unique_name, FIRST_INSTRUMENT)],
                )
        return project_id

    def find_project(self, title: str) -> int | None:
        """The id of the first project with this title, if any."""
        with self.store.reading() as conn:
            return store.find_project_id(conn, title)

    def set_production(self, project_id: int, production: bool = True) -> None:
        with self.store.writing() as conn:
            store.set_production(conn, project_id, production, self._now_text())

    def add_token(
        self,
        project_id: int,
        *,
        can_export: bool = True,
        can_import: bool = True,
        can_delete: bool = True,
        can_design: bool = True,
        token: str | None = None,
    ) -> str:
        """Register an API token for the project (a new random one unless ``token`` is given)."""
        token = token or new_token()
        if not is_token_shaped(token):
            raise ValueError("a REDCap token is 32 upper-case hexadecimal characters")
        grant = TokenGrant(token, project_id, can_export, can_import, can_delete, can_design)
        with self.store.writing() as conn:
            store.insert_token(conn, grant)
        return token

    def tokens(self, project_id: int) -> list[TokenGrant]:
        with self.store.reading() as conn:
            return store.project_tokens(conn, project_id)

    def handle(self, body: bytes, content_type: str) -> tuple[ApiResponse, RequestRecord]:
        """Serve one POSTed API request body."""
        return self._serve(parse_form_body(body, content_type))

    def call(self, params: Mapping[str, str]) -> ApiResponse:
        """Serve an API request given as form fields, without HTTP (for tests)."""
        return self._serve(FormParams.from_mapping(params))[0]

    def _serve(self, params: FormParams) -> tuple[ApiResponse, RequestRecord]:
        response, record = handle_api_request(self.store, params, self._clock())
        with self._lock:
            self._counts[(record.content, record.action)] += 1
            self._recent.append(record)
        return response, record

    def request_count(self, content: str, action: str | None = None) -> int:
        """Requests served for ``content`` (and ``action``: export, import or delete)."""
        with self._lock:
            return sum(
                n for (c, a), n in self._counts.items() if c == content and action in (None, a)
            )

    def requests(self) -> list[RequestRecord]:
        """The most recent requests, oldest first."""
        with self._lock:
            return list(self._recent)

    def clear_request_log(self) -> None:
        with self._lock:
            self._counts.clear()
            self._recent.clear()

    def _now_text(self) -> str:
        return self._clock().strftime("%Y-%m-%d %H:%M:%S")
