"""The registry in JetStream: study records, the index of unassigned ones, and their events.

Used by the service and by the command line (``fiona assign``, ``fiona studies``), so that both
change records the same way: compare-and-set, then the record's outbox published.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from fiona_common import outbox
from fiona_common.bus import Bus
from fiona_common.kvstate import cas_update
from fiona_common.messages import TransferRequested
from services.redcap_sync import metrics
from services.redcap_sync.registry import StudyRecord

RECORDS = "fiona_studies"
UNASSIGNED = "fiona_unassigned"  # key -> when the study completed, while no transfer exists


def record_key(site: str, study_uid: str) -> str:
    return f"{site}.{study_uid}"


@dataclass
class Registry:
    bus: Bus
    records: KeyValue
    unassigned: KeyValue

    @classmethod
    async def open(cls, bus: Bus) -> "Registry":
        await bus.ensure_streams()
        return cls(bus, await bus.kv(RECORDS), await bus.kv(UNASSIGNED))

    async def get(self, key: str) -> StudyRecord | None:
        try:
            entry = await self.records.get(key)
        except KeyNotFoundError:
            return None
        return StudyRecord.decode(entry.value or b"{}")

    async def update(
        self, key: str, change: Callable[[StudyRecord | None], StudyRecord | None]
    ) -> StudyRecord | None:
        """Apply ``change`` (None: nothing to do), publish what it decided, keep the index."""

        def step(current: bytes | None) -> bytes | None:
            record = change(StudyRecord.decode(current) if current is not None else None)
            return None if record is None else record.encode()

        written = await cas_update(self.records, key, step)
        for event in await outbox.flush(self.records, key, self.bus, StudyRecord.decode):
            if isinstance(event, TransferRequested):  # counted once: by whoever took it out
                metrics.REQUESTS.labels(event.reason).inc()
        record = StudyRecord.decode(written[0]) if written else await self.get(key)
        if record is not None:
            await self._index(key, record)
        return record

    async def _index(self, key: str, record: StudyRecord) -> None:
        if record.assigned:
            try:
                await self.unassigned.delete(key)
            except KeyNotFoundError:
                pass
        elif record.completed_at is not None:
            await self.unassigned.put(key, record.completed_at.isoformat().encode())

    async def unassigned_since(self, oldest: datetime) -> list[str]:
        """Keys of unassigned studies completed after ``oldest``."""
        found = []
        for key in await _keys(self.unassigned):
            try:
                entry = await self.unassigned.get(key)
            except KeyNotFoundError:
                continue
            if entry.value and datetime.fromisoformat(entry.value.decode()) >= oldest:
                found.append(key)
        return found

    async def all_records(self) -> list[StudyRecord]:
        records = [await self.get(k) for k in await _keys(self.records)]
        return [r for r in records if r is not None]


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return list(await kv.keys())
    except NoKeysError:
        return []
