"""Reading and writing record data: the record list with modification times, and value rows."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence

from redcap_emulator.record_rows import RowKey, RowValues, record_sort_key

# SQLite limits the number of bound parameters; stay well below it.
_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def record_names(conn: sqlite3.Connection, project_id: int) -> list[str]:
    """All record names of a project in REDCap's export order."""
    rows = conn.execute("SELECT record FROM records WHERE project_id = ?", (project_id,))
    return sorted((str(r) for (r,) in rows), key=record_sort_key)


def records_modified_between(
    conn: sqlite3.Connection, project_id: int, begin: str, end: str
) -> set[str]:
    """Records created or changed within [begin, end] (``YYYY-MM-DD HH:MM:SS`` strings)."""
    rows = conn.execute(
        "SELECT record FROM records WHERE project_id = ? AND modified_at >= ? AND modified_at <= ?",
        (project_id, begin, end),
    )
    return {str(r) for (r,) in rows}


def load_rows(
    conn: sqlite3.Connection, project_id: int, records: Sequence[str] | None = None
) -> dict[RowKey, RowValues]:
    """Stored value rows, of every record or of the ``records`` named."""
    query = (
        "SELECT record, event, instrument, instance, values_json FROM data_rows"
        " WHERE project_id = ?"
    )
    if records is None:
        cursors = [conn.execute(query, (project_id,))]
    else:
        cursors = [
            conn.execute(
                f"{query} AND record IN ({','.join('?' * len(chunk))})", (project_id, *chunk)
            )
            for chunk in _chunks(records)
        ]
    rows: dict[RowKey, RowValues] = {}
    for cursor in cursors:
        for record, event, instrument, instance, values in cursor:
            rows[RowKey(str(record), str(event), str(instrument), int(instance))] = json.loads(
                values
            )
    return rows


def touch_records(
    conn: sqlite3.Connection, project_id: int, records: Collection[str], now: str
) -> None:
    """Create the records that do not exist yet and mark all of them modified at ``now``."""
    conn.executemany(
        "INSERT INTO records (project_id, record, modified_at) VALUES (?, ?, ?)"
        " ON CONFLICT (project_id, record) DO UPDATE SET modified_at = excluded.modified_at",
        [(project_id, record, now) for record in records],
    )


def save_rows(conn: sqlite3.Connection, project_id: int, rows: Mapping[RowKey, RowValues]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO data_rows (project_id, record, event, instrument, instance,"
        " values_json) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (project_id, k.record, k.event, k.instrument, k.instance, json.dumps(values))
            for k, values in rows.items()
        ],
    )


def delete_rows(conn: sqlite3.Connection, project_id: int, keys: Collection[RowKey]) -> None:
    conn.executemany(
        "DELETE FROM data_rows WHERE project_id = ? AND record = ? AND event = ?"
        " AND instrument = ? AND instance = ?",
        [(project_id, k.record, k.event, k.instrument, k.instance) for k in keys],
    )


def delete_records(conn: sqlite3.Connection, project_id: int, records: Sequence[str]) -> None:
    """Remove records entirely (their rows go with them)."""
    for chunk in _chunks(records):
        marks = ",".join("?" * len(chunk))
        conn.execute(
            f"DELETE FROM records WHERE project_id = ? AND record IN ({marks})",
            (project_id, *chunk),
        )
