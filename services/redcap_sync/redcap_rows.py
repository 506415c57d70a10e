"""Rows of REDCap repeating instruments: which instance number each of FIONA's items has.

REDCap imports address a repeating instrument's rows by instance number, and the writer must
pick the number of a new row itself. Several writers (replicas, the three event consumers, a
person in REDCap) may add rows to the same record at once; two of them picking the same
"highest + 1" would merge two rows into one. So numbers are handed out by a compare-and-set
counter per (REDCap project, record, instrument) in JetStream, never below what REDCap already
has, and the number an item got is kept, so a resend writes the same row again. What remains
is a person adding a row by hand in the very second FIONA imports one (docs/redcap.md).
"""

import hashlib
from datetime import UTC, datetime

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from fiona_common.kvstate import cas_update

BUCKET = "fiona_redcap_rows"
REDCAP_TIME = "%Y-%m-%d %H:%M"  # REDCap's datetime_ymd, in the server's local time


def _h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def scope(role: str, record: str, instrument: str) -> str:
    return f"{role}.{_h(record)}.{instrument}"


async def _get_int(kv: KeyValue, key: str) -> int | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return int(entry.value) if entry.value else None


async def instance_for(
    kv: KeyValue, where: str, item: str, existing: dict[str, int], highest: int
) -> int:
    """The instance number of ``item`` in ``where`` (a :func:`scope`).

    ``existing``: items already in REDCap and their numbers; ``highest``: the highest number
    REDCap has in this record's instrument (rows of other writers included).
    """
    key = f"{where}.item.{_h(item)}"
    known = await _get_int(kv, key)
    if known is not None:
        return known
    number = existing.get(item) or await _next_number(kv, where, highest)
    try:
        await kv.create(key, str(number).encode())
        return number
    except KeyWrongLastSequenceError:  # another writer numbered it at the same moment
        return await _get_int(kv, key) or number


async def _next_number(kv: KeyValue, where: str, highest: int) -> int:
    taken: list[int] = []

    def step(current: bytes | None) -> bytes:
        number = max(int(current or b"1"), highest + 1)
        taken[:] = [number]
        return str(number + 1).encode()

    await cas_update(kv, f"{where}.next", step)
    return taken[0]


def instances(
    rows: list[dict[str, object]], instrument: str
) -> list[tuple[int, dict[str, object]]]:
    """The rows of one repeating instrument with their instance numbers."""
    found = []
    for row in rows:
        if row.get("redcap_repeat_instrument") == instrument:
            try:
                found.append((int(str(row.get("redcap_repeat_instance"))), row))
            except ValueError:
                continue
    return found


def redcap_time(moment: datetime) -> str:
    return moment.astimezone().strftime(REDCAP_TIME)


def parse_redcap_time(text: object) -> datetime | None:
    """A REDCap date or datetime (local time) as an aware datetime; None if empty or invalid."""
    value = str(text or "").strip()
    for pattern in (REDCAP_TIME, "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, pattern).astimezone().astimezone(UTC)
        except ValueError:
            continue
    return None
