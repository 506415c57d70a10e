"""Reading and writing a project's setup: dictionary, arms, events, designations, repeating."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from redcap_emulator.design import Arm, Design, Event, Field, ProjectInfo


def load_design(conn: sqlite3.Connection, project_id: int) -> Design:
    """The whole setup of one project as of the current transaction."""
    return Design(
        info=_load_info(conn, project_id),
        fields=_load_fields(conn, project_id),
        arms=_load_arms(conn, project_id),
        events=_load_events(conn, project_id),
        designations=frozenset(
            (str(event), str(form))
            for event, form in conn.execute(
                "SELECT unique_event_name, form FROM form_events WHERE project_id = ?",
                (project_id,),
            )
        ),
        repeating={
            (str(event), str(form)): str(label)
            for event, form, label in conn.execute(
                "SELECT event, form, custom_form_label FROM repeating WHERE project_id = ?",
                (project_id,),
            )
        },
    )


def _load_info(conn: sqlite3.Connection, project_id: int) -> ProjectInfo:
    row = conn.execute(
        "SELECT title, is_longitudinal, in_production, record_autonumbering, creation_time,"
        " production_time FROM projects WHERE project_id = ?",
        (project_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"no project {project_id}")
    title, longitudinal, production, autonumbering, created, produced = row
    return ProjectInfo(
        project_id,
        str(title),
        bool(longitudinal),
        bool(production),
        bool(autonumbering),
        str(created),
        str(produced),
    )


def _load_fields(conn: sqlite3.Connection, project_id: int) -> tuple[Field, ...]:
    row = conn.execute(
        "SELECT fields_json FROM dictionaries WHERE project_id = ?", (project_id,)
    ).fetchone()
    rows: list[dict[str, str]] = json.loads(row[0]) if row else []
    return tuple(Field(dict(r)) for r in rows)


def _load_arms(conn: sqlite3.Connection, project_id: int) -> tuple[Arm, ...]:
    rows = conn.execute(
        "SELECT arm_num, name FROM arms WHERE project_id = ? ORDER BY arm_num", (project_id,)
    )
    return tuple(Arm(int(num), str(name)) for num, name in rows)


def _load_events(conn: sqlite3.Connection, project_id: int) -> tuple[Event, ...]:
    rows = conn.execute(
        "SELECT event_id, unique_event_name, event_name, arm_num, custom_event_label,"
        " days_offset, offset_min, offset_max FROM events WHERE project_id = ?"
        " ORDER BY arm_num, days_offset, event_id",
        (project_id,),
    )
    return tuple(
        Event(int(i), str(u), str(n), int(a), str(c), int(d), int(lo), int(hi))
        for i, u, n, a, c, d, lo, hi in rows
    )


def save_dictionary(conn: sqlite3.Connection, project_id: int, rows: list[dict[str, str]]) -> None:
    """Replace the data dictionary; drop designations and repeating setup of vanished forms."""
    conn.execute(
        "INSERT OR REPLACE INTO dictionaries (project_id, fields_json) VALUES (?, ?)",
        (project_id, json.dumps(rows)),
    )
    forms = sorted({r["form_name"] for r in rows})
    marks = ",".join("?" * len(forms))
    conn.execute(
        f"DELETE FROM form_events WHERE project_id = ? AND form NOT IN ({marks})",
        (project_id, *forms),
    )
    conn.execute(
        f"DELETE FROM repeating WHERE project_id = ? AND form <> '' AND form NOT IN ({marks})",
        (project_id, *forms),
    )


def save_arm(conn: sqlite3.Connection, project_id: int, arm: Arm) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO arms (project_id, arm_num, name) VALUES (?, ?, ?)",
        (project_id, arm.number, arm.name),
    )


def delete_arms(conn: sqlite3.Connection, project_id: int, numbers: Iterable[int]) -> int:
    """Delete arms with their events (and the events' data); returns the arms deleted."""
    count = 0
    for number in numbers:
        events = conn.execute(
            "SELECT unique_event_name FROM events WHERE project_id = ? AND arm_num = ?",
            (project_id, number),
        ).fetchall()
        delete_events(conn, project_id, [str(e) for (e,) in events])
        count += conn.execute(
            "DELETE FROM arms WHERE project_id = ? AND arm_num = ?", (project_id, number)
        ).rowcount
    return count


def save_event(conn: sqlite3.Connection, project_id: int, event: Event) -> None:
    """Insert a new event (``event_id`` 0) or update the one with the same unique name."""
    values = (
        event.arm,
        event.name,
        event.custom_label,
        event.days_offset,
        event.offset_min,
        event.offset_max,
    )
    updated = conn.execute(
        "UPDATE events SET arm_num = ?, event_name = ?, custom_event_label = ?, days_offset = ?,"
        " offset_min = ?, offset_max = ? WHERE project_id = ? AND unique_event_name = ?",
        (*values, project_id, event.unique_name),
    ).rowcount
    if not updated:
        conn.execute(
            "INSERT INTO events (arm_num, event_name, custom_event_label, days_offset, offset_min,"
            " offset_max, project_id, unique_event_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, project_id, event.unique_name),
        )


def delete_events(conn: sqlite3.Connection, project_id: int, unique_names: list[str]) -> int:
    """Delete events with their designations, repeating setup and data (as REDCap does)."""
    count = 0
    for name in unique_names:
        for table, column in (
            ("form_events", "unique_event_name"),
            ("repeating", "event"),
            ("data_rows", "event"),
        ):
            conn.execute(
                f"DELETE FROM {table} WHERE project_id = ? AND {column} = ?", (project_id, name)
            )
        count += conn.execute(
            "DELETE FROM events WHERE project_id = ? AND unique_event_name = ?", (project_id, name)
        ).rowcount
    return count


def replace_designations(
    conn: sqlite3.Connection,
    project_id: int,
    events: Iterable[str],
    pairs: Iterable[tuple[str, str]],
) -> None:
    """Set the instruments of ``events`` to exactly the (event, form) ``pairs`` given."""
    for event in set(events):
        conn.execute(
            "DELETE FROM form_events WHERE project_id = ? AND unique_event_name = ?",
            (project_id, event),
        )
    conn.executemany(
        "INSERT OR IGNORE INTO form_events (project_id, unique_event_name, form) VALUES (?, ?, ?)",
        [(project_id, event, form) for event, form in pairs],
    )


def replace_repeating(
    conn: sqlite3.Connection, project_id: int, setup: Mapping[tuple[str, str], str]
) -> None:
    conn.execute("DELETE FROM repeating WHERE project_id = ?", (project_id,))
    conn.executemany(
        "INSERT INTO repeating (project_id, event, form, custom_form_label) VALUES (?, ?, ?, ?)",
        [(project_id, event, form, label) for (event, form), label in setup.items()],
    )
