"""The delivery ledger: per transfer and destination, what each object became and when.

Key ``<transfer_id>.<destination>`` in the key-value bucket ``fiona_ledger``. Objects are listed
by a hash of their source SOP Instance UID (never the UID itself) with the pseudonymized SOP
UID, the status and the attempts. A resend (a retry, or a reopened study) reads it to send only
what the destination has not confirmed; a restart loses nothing, because an object counts as
sent only once it is written here.
"""

import hashlib
from datetime import datetime
from enum import StrEnum

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, Field

from fiona_common.kvstate import cas_update

BUCKET = "fiona_ledger"


class Status(StrEnum):
    SENT = "sent"  # confirmed by the destination
    REFUSED = "refused"  # permanently refused by the destination
    HELD = "held"  # not sent: dropped by policy or quarantined by de-identification
    PENDING = "pending"  # tried, not confirmed yet (transient failure)


class ObjectEntry(BaseModel):
    dest_sop_uid: str = ""
    status: Status
    attempts: int = 0
    at: datetime
    note: str = ""


class Ledger(BaseModel):
    objects: dict[str, ObjectEntry] = Field(default_factory=dict)  # source hash -> entry
    mapped_study_uid: str = ""

    def done(self, source_hash: str) -> bool:
        entry = self.objects.get(source_hash)
        return entry is not None and entry.status is not Status.PENDING

    def count(self, status: Status) -> int:
        return sum(1 for e in self.objects.values() if e.status is status)


def source_hash(sop_uid: str) -> str:
    return hashlib.sha256(sop_uid.encode()).hexdigest()[:24]


def ledger_key(transfer_id: str, destination: int) -> str:
    return f"{transfer_id}.{destination}"


async def load(kv: KeyValue, key: str) -> Ledger:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return Ledger()
    return Ledger.model_validate_json(entry.value or b"{}")


async def record(
    kv: KeyValue, key: str, entries: dict[str, ObjectEntry], mapped_study_uid: str = ""
) -> Ledger:
    """Merge ``entries`` into the ledger (attempts add up); the merged ledger."""

    def step(current: bytes | None) -> bytes:
        ledger = Ledger.model_validate_json(current) if current else Ledger()
        for source, entry in entries.items():
            before = ledger.objects.get(source)
            attempts = (before.attempts if before else 0) + entry.attempts
            ledger.objects[source] = entry.model_copy(update={"attempts": attempts})
        ledger.mapped_study_uid = ledger.mapped_study_uid or mapped_study_uid
        return ledger.model_dump_json().encode()

    written = await cas_update(kv, key, step)
    return Ledger.model_validate_json(written[0]) if written else await load(kv, key)
