"""How record data is held: one value map per record, event, repeating instrument and instance."""

from __future__ import annotations

from dataclasses import dataclass

RowValues = dict[str, str]


@dataclass(frozen=True, order=True)
class RowKey:
    """Where a set of values lives.

    ``event`` is ``""`` in classic projects. ``instrument`` is ``""`` for the event's own row
    (the non-repeating data, or an instance of a repeating event); ``instance`` is 1 for rows
    that do not repeat.
    """

    record: str
    event: str
    instrument: str = ""
    instance: int = 1


def record_sort_key(record: str) -> tuple[int, int, str]:
    """Integer record names first in numeric order, then the others alphabetically."""
    if record.isdigit():
        return (0, int(record), "")
    return (1, 0, record)


def next_record_number(records: list[str]) -> int:
    """One more than the highest integer record name (1 when there is none)."""
    numbers = [int(r) for r in records if r.isdigit()]
    return max(numbers, default=0) + 1
