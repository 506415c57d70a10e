"""SQLite persistence: one database file in WAL mode, one short transaction per API request.

Writers take the write lock up front (``BEGIN IMMEDIATE``) so a read-modify-write import never
interleaves with another one, whether it comes from another thread or another process.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redcap_emulator.tokens import TokenGrant

BUSY_TIMEOUT_SECONDS = 30.0
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    project_id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    is_longitudinal INTEGER NOT NULL,
    in_production INTEGER NOT NULL,
    record_autonumbering INTEGER NOT NULL,
    creation_time TEXT NOT NULL,
    production_time TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(project_id),
    can_export INTEGER NOT NULL,
    can_import INTEGER NOT NULL,
    can_delete INTEGER NOT NULL,
    can_design INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dictionaries (
    project_id INTEGER PRIMARY KEY REFERENCES projects(project_id),
    fields_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS arms (
    project_id INTEGER NOT NULL REFERENCES projects(project_id),
    arm_num INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (project_id, arm_num)
);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects(project_id),
    arm_num INTEGER NOT NULL,
    event_name TEXT NOT NULL,
    unique_event_name TEXT NOT NULL,
    custom_event_label TEXT NOT NULL DEFAULT '',
    days_offset INTEGER NOT NULL DEFAULT 1,
    offset_min INTEGER NOT NULL DEFAULT 0,
    offset_max INTEGER NOT NULL DEFAULT 0,
    UNIQUE (project_id, unique_event_name)
);
CREATE TABLE IF NOT EXISTS form_events (
    project_id INTEGER NOT NULL REFERENCES projects(project_id),
    unique_event_name TEXT NOT NULL,
    form TEXT NOT NULL,
    PRIMARY KEY (project_id, unique_event_name, form)
);
CREATE TABLE IF NOT EXISTS repeating (
    project_id INTEGER NOT NULL REFERENCES projects(project_id),
    event TEXT NOT NULL,
    form TEXT NOT NULL,
    custom_form_label TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (project_id, event, form)
);
CREATE TABLE IF NOT EXISTS records (
    project_id INTEGER NOT NULL REFERENCES projects(project_id),
    record TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (project_id, record)
);
CREATE TABLE IF NOT EXISTS data_rows (
    project_id INTEGER NOT NULL,
    record TEXT NOT NULL,
    event TEXT NOT NULL,
    instrument TEXT NOT NULL,
    instance INTEGER NOT NULL,
    values_json TEXT NOT NULL,
    PRIMARY KEY (project_id, record, event, instrument, instance),
    FOREIGN KEY (project_id, record) REFERENCES records(project_id, record) ON DELETE CASCADE
);
"""


def make_private_dir(path: Path) -> None:
    """Create ``path`` and missing parents, each readable by its owner only."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)


class Store:
    """The emulator database: hands out connections inside a transaction."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        make_private_dir(db_path.parent)
        # The file holds API tokens: create it private, so the -wal and -shm files are too.
        os.close(os.open(db_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
        os.chmod(db_path, PRIVATE_FILE_MODE)
        conn = self._connect()
        try:
            # WAL cannot be switched on inside a transaction; it persists in the file.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection inside a read transaction (a consistent snapshot)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A connection holding the write lock; committed on success, rolled back on error."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()


def insert_project(
    conn: sqlite3.Connection,
    title: str,
    longitudinal: bool,
    production: bool,
    autonumbering: bool,
    now: str,
) -> int:
    cursor = conn.execute(
        "INSERT INTO projects (title, is_longitudinal, in_production, record_autonumbering,"
        " creation_time, production_time) VALUES (?, ?, ?, ?, ?, ?)",
        (
            title,
            int(longitudinal),
            int(production),
            int(autonumbering),
            now,
            now if production else "",
        ),
    )
    return int(cursor.lastrowid or 0)


def find_project_id(conn: sqlite3.Connection, title: str) -> int | None:
    row = conn.execute(
        "SELECT project_id FROM projects WHERE title = ? ORDER BY project_id LIMIT 1", (title,)
    ).fetchone()
    return int(row[0]) if row else None


def set_production(conn: sqlite3.Connection, project_id: int, production: bool, now: str) -> None:
    conn.execute(
        "UPDATE projects SET in_production = ?, production_time = ? WHERE project_id = ?",
        (int(production), now if production else "", project_id),
    )


def insert_token(conn: sqlite3.Connection, grant: TokenGrant) -> None:
    conn.execute(
        "INSERT INTO tokens (token, project_id, can_export, can_import, can_delete, can_design)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            grant.token,
            grant.project_id,
            int(grant.can_export),
            int(grant.can_import),
            int(grant.can_delete),
            int(grant.can_design),
        ),
    )


def find_token(conn: sqlite3.Connection, token: str) -> TokenGrant | None:
    row = conn.execute(
        "SELECT project_id, can_export, can_import, can_delete, can_design FROM tokens"
        " WHERE token = ?",
        (token,),
    ).fetchone()
    if row is None:
        return None
    return TokenGrant(token, int(row[0]), bool(row[1]), bool(row[2]), bool(row[3]), bool(row[4]))


def project_tokens(conn: sqlite3.Connection, project_id: int) -> list[TokenGrant]:
    rows = conn.execute(
        "SELECT token FROM tokens WHERE project_id = ? ORDER BY rowid", (project_id,)
    ).fetchall()
    return [grant for (token,) in rows if (grant := find_token(conn, str(token)))]
