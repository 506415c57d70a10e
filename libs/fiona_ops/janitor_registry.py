"""What the janitor reads from and changes in JetStream's key-value buckets.

The study registry (``fiona_studies``, with the ``fiona_unassigned`` index) is redcap_sync's and
the delivery ledgers (``fiona_ledger``) are the exporter's; the janitor only reads them and
deletes the entries of a study it deletes. ``fiona_purged`` is its own: one tombstone per
deleted study (key ``<site>.<StudyInstanceUID>`` as in the registry).
"""

from dataclasses import dataclass
from datetime import datetime

from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel, Field

from fiona_common.bus import Bus
from services.exporter import ledger
from services.redcap_sync.registry import StudyRecord

# services.redcap_sync.store.RECORDS and UNASSIGNED: not imported, as that module registers
# redcap_sync's metrics, which the janitor's /metrics would then report as its own.
STUDIES_BUCKET = "fiona_studies"
UNASSIGNED_BUCKET = "fiona_unassigned"
PURGED_BUCKET = "fiona_purged"
_WRONG_LAST_SEQUENCE = 10071  # JetStream: the expected revision is not the current one


class Tombstone(BaseModel):
    """What is kept of a deleted study: when, why, how big, its transfers' last states, and
    the deliveries deleted with it (to finish an interrupted deletion). No patient data."""

    purged_at: datetime
    reason: str
    size_bytes: int
    transfers: dict[str, str] = Field(default_factory=dict)  # transfer id -> "project: state"
    paths: list[str] = Field(default_factory=list)


@dataclass
class RegistryView:
    """The buckets as they are; one not created yet reads as empty (nothing is created to
    read, so that ``--dry-run`` changes nothing)."""

    bus: Bus
    studies: KeyValue | None
    unassigned: KeyValue | None
    ledgers: KeyValue | None
    purged: KeyValue | None

    @classmethod
    async def open(cls, bus: Bus) -> "RegistryView":
        buckets = [STUDIES_BUCKET, UNASSIGNED_BUCKET, ledger.BUCKET, PURGED_BUCKET]
        return cls(bus, *[await _existing(bus, name) for name in buckets])

    async def record(self, key: str) -> tuple[StudyRecord | None, int | None]:
        """The study's registry record and its revision (None, None: no record)."""
        entry = await _get(self.studies, key)
        if entry is None:
            return None, None
        return StudyRecord.decode(entry[0]), entry[1]

    async def tombstone(self, key: str) -> Tombstone | None:
        entry = await _get(self.purged, key)
        return Tombstone.model_validate_json(entry[0]) if entry else None

    async def ledger_keys(self) -> dict[str, list[str]]:
        """Transfer id -> the keys of its ledgers (one per destination)."""
        found: dict[str, list[str]] = {}
        for key in await _keys(self.ledgers):
            found.setdefault(key.rsplit(".", 1)[0], []).append(key)
        return found

    async def mapped_study_uid(self, ledger_key: str) -> str:
        """The pseudonymized Study Instance UID a delivery was made under ("" if unknown)."""
        if self.ledgers is None:
            return ""
        return (await ledger.load(self.ledgers, ledger_key)).mapped_study_uid

    async def forget(
        self, key: str, revision: int | None, tombstone: Tombstone, ledger_keys: list[str]
    ) -> bool:
        """Tombstone the study, then delete its record if it is still at ``revision``, its
        unassigned entry and its ledgers. False (and no change) if the record changed."""
        purged = self.purged or await self.bus.kv(PURGED_BUCKET)
        self.purged = purged
        await purged.put(key, tombstone.model_dump_json().encode())
        if self.studies is not None and revision is not None:
            try:
                await self.studies.delete(key, last=revision)
            except APIError as err:
                if err.err_code != _WRONG_LAST_SEQUENCE:
                    raise
                await purged.delete(key)
                return False
        if self.unassigned is not None:
            await self.unassigned.delete(key)
        if self.ledgers is not None:
            for each in ledger_keys:
                await self.ledgers.delete(each)
        return True


async def _existing(bus: Bus, name: str) -> KeyValue | None:
    try:
        return await bus.js.key_value(name)
    except BucketNotFoundError:
        return None


async def _get(kv: KeyValue | None, key: str) -> tuple[bytes, int] | None:
    if kv is None:
        return None
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    if entry.value is None or entry.revision is None:
        return None
    return entry.value, entry.revision


async def _keys(kv: KeyValue | None) -> list[str]:
    if kv is None:
        return []
    try:
        return list(await kv.keys())
    except NoKeysError:
        return []
