"""Arms, events, instrument-event designations and the repeating setup, as the API shows them.

Functions here turn the project's setup into API rows and uploaded rows into setup, refusing
what REDCap would refuse; the design API module stores the result.
"""

from __future__ import annotations

import re

from redcap_emulator.design import Arm, Design, Event
from redcap_emulator.metadata import reject_unknown_values
from redcap_emulator.protocol import ApiError

_UNSAFE = re.compile(r"[^a-z0-9]+")
_UNIQUE_NAME_STEM_LENGTH = 18


def unique_event_name(name: str, arm: int, taken: set[str]) -> str:
    """REDCap's unique event name: the cleaned name, shortened, plus ``_arm_N``."""
    stem = (
        _UNSAFE.sub("_", name.lower()).strip("_")[:_UNIQUE_NAME_STEM_LENGTH].strip("_") or "event"
    )
    candidate, suffix = f"{stem}_arm_{arm}", ord("b")
    while candidate in taken:
        candidate, suffix = f"{stem}{chr(suffix)}_arm_{arm}", suffix + 1
    return candidate


def require_longitudinal(design: Design, what: str, verb: str = "export") -> None:
    if not design.info.longitudinal:
        raise ApiError(400, f"You cannot {verb} {what} for classic projects")


def chosen_arms(design: Design, asked: list[str]) -> set[int]:
    known = [str(a.number) for a in design.arms]
    reject_unknown_values("arms", asked, known)
    return {int(a) for a in asked} if asked else {a.number for a in design.arms}


def export_arms(design: Design, asked: list[str]) -> list[dict[str, object]]:
    arms = chosen_arms(design, asked)
    return [{"arm_num": a.number, "name": a.name} for a in design.arms if a.number in arms]


def export_events(design: Design, asked: list[str]) -> list[dict[str, object]]:
    arms = chosen_arms(design, asked)
    return [
        {
            "event_name": e.name,
            "arm_num": e.arm,
            "unique_event_name": e.unique_name,
            "custom_event_label": e.custom_label,
            "event_id": e.event_id,
            "days_offset": e.days_offset,
            "offset_min": e.offset_min,
            "offset_max": e.offset_max,
        }
        for e in design.events
        if e.arm in arms
    ]


def export_designations(design: Design, asked: list[str]) -> list[dict[str, object]]:
    arms = chosen_arms(design, asked)
    return [
        {"arm_num": e.arm, "unique_event_name": e.unique_name, "form": form}
        for e in design.events
        if e.arm in arms
        for form in design.forms
        if (e.unique_name, form) in design.designations
    ]


def export_repeating(design: Design) -> list[dict[str, str]]:
    rows = []
    for (event, form), label in design.repeating.items():
        row = {"event_name": event} if design.info.longitudinal else {}
        rows.append({**row, "form_name": form, "custom_form_label": label})
    return rows


def arms_from_rows(rows: list[dict[str, str]]) -> list[Arm]:
    arms = []
    for row in rows:
        number = _positive_int(row.get("arm_num", ""), "arm_num")
        name = row.get("name", "").strip()
        if not name:
            raise ApiError(400, f"Arm {number} needs a name")
        arms.append(Arm(number, name))
    return arms


def events_from_rows(design: Design, rows: list[dict[str, str]], replacing: bool) -> list[Event]:
    """Events to save: rows naming an existing unique event name update it, others are new."""
    arms = {a.number for a in design.arms}
    existing = set() if replacing else {e.unique_name for e in design.events}
    taken = set(existing)
    events = []
    for row in rows:
        name = row.get("event_name", "").strip()
        arm = _positive_int(row.get("arm_num", ""), "arm_num")
        if not name:
            raise ApiError(400, "Every event needs an event_name")
        if arm not in arms:
            raise ApiError(400, f"Arm {arm} does not exist in the project")
        unique = row.get("unique_event_name", "").strip()
        if unique not in existing:
            unique = unique_event_name(name, arm, taken)
        taken.add(unique)
        events.append(
            Event(
                0,
                unique,
                name,
                arm,
                row.get("custom_event_label", "").strip(),
                _int(row.get("days_offset", ""), 1),
                _int(row.get("offset_min", ""), 0),
                _int(row.get("offset_max", ""), 0),
            )
        )
    return events


def designations_from_rows(design: Design, rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(event, form) pairs of an instrument-event mapping upload, checked against the project."""
    pairs = []
    for row in rows:
        event_name, form = row.get("unique_event_name", "").strip(), row.get("form", "").strip()
        event = design.event(event_name)
        if event is None:
            raise ApiError(400, f"The event {event_name!r} does not exist in the project")
        if row.get("arm_num", "").strip() not in ("", str(event.arm)):
            raise ApiError(400, f"The event {event_name} does not belong to arm {row['arm_num']}")
        if form not in design.forms:
            raise ApiError(400, f"The instrument {form!r} does not exist in the project")
        pairs.append((event_name, form))
    return pairs


def repeating_from_rows(design: Design, rows: list[dict[str, str]]) -> dict[tuple[str, str], str]:
    setup: dict[tuple[str, str], str] = {}
    for row in rows:
        form = row.get("form_name", "").strip()
        event = row.get("event_name", "").strip() if design.info.longitudinal else ""
        if design.info.longitudinal and design.event(event) is None:
            raise ApiError(400, f"The event {event!r} does not exist in the project")
        if form and form not in design.forms:
            raise ApiError(400, f"The instrument {form!r} does not exist in the project")
        if not form and not design.info.longitudinal:
            raise ApiError(400, "Every row needs a form_name (classic projects have no events)")
        setup[(event, form)] = row.get("custom_form_label", "").strip()
    return setup


def _positive_int(text: str, name: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ApiError(400, f"The value of {name} ({text!r}) must be a positive integer")
    return int(text)


def _int(text: str, default: int) -> int:
    try:
        return int(float(text)) if text.strip() else default
    except ValueError as err:
        raise ApiError(400, f"{text!r} is not a number") from err
