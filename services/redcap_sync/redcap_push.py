"""FIONA -> REDCap: incoming studies and series, transfers and their results, project imaging.

Three durable consumers feed this module (study complete, transfer requested, transfer
result); each batch becomes a few chunked imports. While REDCap is unreachable the batch is
handed back (:class:`Later`) and comes again, in order, so nothing is lost: JetStream is the
queue of pending writes. Every write is an upsert of whole rows with known instance numbers
(:mod:`redcap_rows`), so a resend or a second replica writes the same rows again instead of
adding new ones.
"""

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from fiona_common.clock import utc_now
from fiona_common.errors import BadInput, Later
from fiona_common.messages import StudyComplete, TransferOutcome, TransferRequested, TransferResult
from services.redcap_sync import metrics
from services.redcap_sync.handlers import SyncDeps, describe
from services.redcap_sync.redcap_api import (
    Redcap,
    RedcapProject,
    RedcapUnavailable,
    Row,
    project_role,
)
from services.redcap_sync.redcap_rows import instance_for, instances, redcap_time, scope
from services.redcap_sync.registry import (
    SeriesInfo,
    StudyRecord,
    Transfer,
    TransferState,
    transfer_id,
)
from services.redcap_sync.routes import read_facts
from services.redcap_sync.store import record_key

log = logging.getLogger(__name__)
Outcome = BadInput | None
MAX_RETRY_SECONDS = 600.0
E = TypeVar("E", TransferRequested, TransferResult)
TRANSFER_FIELDS = [
    "study_instance_uid",
    "transfer_project_name",
    "transfer_name",
    "transfer_event_name",
    "transfer_status",
    "transfer_request_no",
]
# Writes of one transfer may arrive out of order (three queues, redeliveries): a row only ever
# moves forward, by (request number, rank of the state).
RANK = {"requested": 0, "started": 1, "delivered": 2, "failed": 2}
Progress = tuple[int, int]


@dataclass
class Slot:
    """A transfer's row in REDCap: its instance number and how far it is."""

    instance: int
    progress: Progress = (0, -1)

    def advance(self, progress: Progress) -> bool:
        """Take ``progress`` if it is newer than the row's; False: the row is ahead, skip."""
        if progress <= self.progress:
            return False
        self.progress = progress
        return True


def progress_of(row: Row) -> Progress:
    try:
        number = int(str(row.get("transfer_request_no") or 0))
    except ValueError:
        number = 0
    return number, RANK.get(str(row.get("transfer_status") or "").split(" ", 1)[0], -1)


@dataclass
class RedcapWriter:
    rc: Redcap
    rows: KeyValue  # instance numbers (redcap_rows)
    sync: SyncDeps
    _imaging_event: dict[str, str | None] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)  # in a row, per kind of write

    async def _guard(self, kind: str, work: Any) -> None:
        """Run a write; when REDCap fails it, the batch comes back after a growing delay."""
        try:
            await work
        except RedcapUnavailable as err:
            metrics.REDCAP_FAILURES.labels(kind).inc()
            failures = self._failures[kind] = self._failures.get(kind, 0) + 1
            delay = min(self.rc.settings.retry_seconds * 2 ** (failures - 1), MAX_RETRY_SECONDS)
            log.warning(
                "REDCap write postponed",
                extra={"kind": kind, "error": str(err), "retry_in_seconds": delay},
            )
            raise Later(delay) from None
        self._failures[kind] = 0

    # -- studies and series -------------------------------------------------------------

    async def write_studies(self, events: list[StudyComplete]) -> list[Outcome]:
        await self._guard("study", self._write_studies(events))
        return [None] * len(events)

    async def _write_studies(self, events: list[StudyComplete]) -> None:
        incoming = self.rc.need("incoming")
        found = []
        for event in events:
            layout = self.sync.layouts.get(event.site)
            facts = (
                await asyncio.to_thread(read_facts, layout, event.site, event.study_uid)
                if layout
                else None
            )
            if facts is None:  # deleted since (or unknown site): nothing to describe
                log.info("study summaries gone, not written to REDCap")
                continue
            found.append((event, facts))
        if not found:
            return
        uids = sorted({e.study_uid for e, _ in found})
        existing = await self.rc.run(
            incoming.export_chunked,
            uids,
            fields=["study_instance_uid", "study_revision", "series_instance_uid"],
        )
        revisions = {
            str(r["study_instance_uid"]): r.get("study_revision")
            for r in existing
            if not r.get("redcap_repeat_instrument")
        }
        rows: list[Row] = []
        for event, facts in found:
            record = describe(None, facts, self.sync.identity)
            if int(str(revisions.get(event.study_uid) or 0)) <= event.revision:
                rows.append(_study_row(event, record))  # not back to an older revision
                revisions[event.study_uid] = str(event.revision)
            mine = [r for r in existing if r.get("study_instance_uid") == event.study_uid]
            known = instances(mine, "series")
            numbered = {str(r.get("series_instance_uid")): n for n, r in known}
            highest = max((n for n, _ in known), default=0)
            where = scope("incoming", event.study_uid, "series")
            for series in record.series:
                number = await instance_for(self.rows, where, series.series_uid, numbered, highest)
                rows.append(_series_row(event.study_uid, series, number))
        await self.rc.run(incoming.import_rows, rows)
        metrics.REDCAP_WRITES.labels("study").inc(len(found))

    # -- transfer requests ------------------------------------------------------------------

    async def write_requests(self, events: list[TransferRequested]) -> list[Outcome]:
        await self._guard("request", self._write_requests(events))
        return [None] * len(events)

    async def _write_requests(self, events: list[TransferRequested]) -> None:
        incoming = self.rc.need("incoming")
        found = await self._with_transfers(events)
        slots = await self._transfer_slots(
            incoming, [(e.study_uid, e.transfer_id) for e, _, _ in found]
        )
        rows = []
        for event, _, transfer in found:
            slot = slots[(event.study_uid, event.transfer_id)]
            if not slot.advance((event.request_no, RANK["requested"])):
                continue
            rows.append(
                {
                    "study_instance_uid": event.study_uid,
                    "redcap_repeat_instrument": "transfers",
                    "redcap_repeat_instance": slot.instance,
                    "transfer_requested_date": redcap_time(
                        _when(transfer, TransferState.REQUESTED)
                    ),
                    "transfer_project_name": event.project,
                    "transfer_name": event.participant,
                    "transfer_event_name": event.event,
                    "transfer_status": f"requested ({event.reason})",
                    "transfer_request_no": str(event.request_no),
                }
            )
        await self.rc.run(incoming.import_rows, rows)
        metrics.REDCAP_WRITES.labels("request").inc(len(rows))
        for event, record, _ in found:
            if event.reason == "autoid" and record.patient_id_hash:
                await self._write_autoid(event, record.patient_id_hash)

    async def _with_transfers(self, events: list[E]) -> list[tuple[E, StudyRecord, Transfer]]:
        """Each event with its study record and transfer (events of unknown ones left out)."""
        found = []
        for event in events:
            record = await self.sync.registry.get(record_key(event.site, event.study_uid))
            transfer = record.transfers.get(event.transfer_id) if record else None
            if record is not None and transfer is not None:
                found.append((event, record, transfer))
        return found

    async def _transfer_slots(
        self, incoming: RedcapProject, wanted: list[tuple[str, str]]
    ) -> dict[tuple[str, str], Slot]:
        """The transfers row of each (study, transfer id): found in REDCap, or a new one."""
        uids = sorted({uid for uid, _ in wanted})
        rows = await self.rc.run(incoming.export_chunked, uids, fields=TRANSFER_FIELDS)
        slots: dict[tuple[str, str], Slot] = {}
        for uid, ident in wanted:
            if (uid, ident) in slots:
                continue
            known = instances([r for r in rows if r.get("study_instance_uid") == uid], "transfers")
            existing = {
                transfer_id(
                    uid,
                    str(r.get("transfer_project_name", "")),
                    str(r.get("transfer_name", "")),
                    str(r.get("transfer_event_name", "")),
                ): (n, r)
                for n, r in sorted(known, key=lambda k: -k[0])  # the first row wins duplicates
            }
            highest = max((n for n, _ in known), default=0)
            where = scope("incoming", uid, "transfers")
            numbers = {i: n for i, (n, _) in existing.items()}
            number = await instance_for(self.rows, where, ident, numbers, highest)
            found = next((r for n, r in known if n == number), None)
            slots[(uid, ident)] = Slot(number, progress_of(found) if found else (0, -1))
        return slots

    async def _write_autoid(self, event: TransferRequested, patient: str) -> None:
        """The AutoID project's row for this patient and project (once, by one writer)."""
        autoid = self.rc.get("autoid")
        if autoid is None:
            return
        claim = f"autoid.{scope('autoid', event.project, patient)}"
        try:
            await self.rows.create(claim, event.transfer_id.encode())
        except KeyWrongLastSequenceError:
            entry = await self.rows.get(claim)
            if entry.value != event.transfer_id.encode():
                return  # another request wrote (or is writing) this mapping
        logic = f"[autoid_project_name] = '{event.project}' and [autoid_hash] = '{patient}'"
        if await self.rc.run(autoid.export, fields=["record_id"], filter_logic=logic):
            return
        name = await self.rc.run(
            autoid.call, "next record name", autoid.api.generate_next_record_name
        )
        row = {
            "record_id": str(name),
            "autoid_project_name": event.project,
            "autoid_hash": patient,
            "autoid_value": event.participant,
            "autoid_method": "1",
            "autoid_complete": "2",
        }
        # forceAutoNumber: REDCap numbers the record itself, so two writers cannot collide.
        await self.rc.run(
            autoid.call, "import", autoid.api.import_records, [row], force_auto_number=True
        )
        metrics.REDCAP_WRITES.labels("autoid").inc()

    # -- results and the project's own REDCap -----------------------------------------------

    async def write_results(self, events: list[TransferResult]) -> list[Outcome]:
        await self._guard("result", self._write_results(events))
        return [None] * len(events)

    async def _write_results(self, events: list[TransferResult]) -> None:
        incoming = self.rc.need("incoming")
        found = await self._with_transfers(events)
        if not found:
            return
        slots = await self._transfer_slots(
            incoming, [(e.study_uid, e.transfer_id) for e, _, _ in found]
        )
        written = []
        for event, record, transfer in found:
            slot = slots[(event.study_uid, event.transfer_id)]
            if slot.advance((event.request_no, RANK[event.outcome.value])):
                written.append(
                    (event, record, transfer, _result_row(event, transfer, slot.instance))
                )
        await self.rc.run(incoming.import_rows, [row for *_, row in written], "overwrite")
        metrics.REDCAP_WRITES.labels("result").inc(len(written))
        for event, record, transfer, _ in written:
            if event.outcome is TransferOutcome.DELIVERED:
                await self._mirror(event, transfer, record.description)

    async def _mirror(self, event: TransferResult, transfer: Transfer, description: str) -> None:
        """The participant and an ``imaging`` row in the research project's own REDCap."""
        project = self.rc.get(project_role(transfer.project))
        mapped = str(event.details.get("mapped_study_uid") or "")
        if project is None or not mapped:
            return
        metadata = await self.rc.run(project.metadata)
        fields = {str(f.get("field_name")) for f in metadata}
        id_field = str(metadata[0]["field_name"])
        event_name = await self._imaging_event_of(project)
        existing = await self.rc.run(
            project.export, records=[transfer.subject], fields=[id_field, "img_study_instance_uid"]
        )
        known = instances(existing, "imaging")
        numbered = {str(r.get("img_study_instance_uid")): n for n, r in known}
        where = scope(project.role, transfer.subject, "imaging")
        number = await instance_for(
            self.rows, where, mapped, numbered, max((n for n, _ in known), default=0)
        )
        participant: Row = {id_field: transfer.subject}
        participant.update(
            {f: transfer.subject for f in ("first_name", "last_name") if f in fields}
        )
        imaging: Row = {
            id_field: transfer.subject,
            "redcap_repeat_instrument": "imaging",
            "redcap_repeat_instance": number,
            "img_study_instance_uid": mapped,
            "img_event_name": transfer.event,
            "img_study_description": description,
        }
        if "img_transfer_date" in fields:
            imaging["img_transfer_date"] = redcap_time(_when(transfer, TransferState.DELIVERED))
        if event_name:
            participant["redcap_event_name"] = imaging["redcap_event_name"] = event_name
        await self.rc.run(project.import_rows, [participant, imaging])
        metrics.REDCAP_WRITES.labels("project").inc()

    async def _imaging_event_of(self, project: RedcapProject) -> str | None:
        """Longitudinal projects: the first event the imaging instrument is designated for."""
        if project.role not in self._imaging_event:
            info = await self.rc.run(project.info)
            event = None
            if str(info.get("is_longitudinal")) in ("1", "True", "true"):
                mapping = await self.rc.run(
                    project.call, "form-event mapping", project.api.export_instrument_event_mappings
                )
                event = next(
                    (m["unique_event_name"] for m in mapping if m.get("form") == "imaging"), None
                )
            self._imaging_event[project.role] = event
        return self._imaging_event[project.role]


def _study_row(event: StudyComplete, record: StudyRecord) -> Row:
    return {
        "study_instance_uid": event.study_uid,
        "study_site": event.site,
        "study_aetitle_sender": record.calling_aet,
        "study_aetitle_addressed": record.called_aet,
        "study_patient_name": record.patient_name_hash,
        "study_patient_id": record.patient_id_hash,
        "study_accession_number": record.accession_hash,
        "study_description": record.description,
        "study_date": record.study_date,
        "study_time": record.study_time,
        "study_arrival_date": redcap_time(event.completed_at),
        "study_revision": str(event.revision),
        "incoming_studies_complete": "2",
    }


def _series_row(study_uid: str, series: SeriesInfo, number: int) -> Row:
    return {
        "study_instance_uid": study_uid,
        "redcap_repeat_instrument": "series",
        "redcap_repeat_instance": number,
        "series_instance_uid": series.series_uid,
        "series_description": series.description,
        "series_modality": series.modality,
        "series_num_files": str(series.num_files),
        "series_classify_types": json.dumps(series.classify_types),
        "series_complete": "2",
    }


def _when(transfer: Transfer, state: TransferState) -> datetime:
    """When the transfer last reached ``state`` (the registry's history), else now."""
    times = [step.at for step in transfer.history if step.state is state]
    return times[-1] if times else utc_now()


def _result_row(event: TransferResult, transfer: Transfer, instance: int) -> Row:
    row: Row = {
        "study_instance_uid": event.study_uid,
        "redcap_repeat_instrument": "transfers",
        "redcap_repeat_instance": instance,
        "transfer_status": event.outcome.value,
        "transfer_request_no": str(event.request_no),
    }
    if event.outcome is TransferOutcome.STARTED:
        return row
    failed = event.outcome is TransferOutcome.FAILED
    deid = failed and "de-identif" in event.error.lower()
    row.update(
        {
            "transfer_date": redcap_time(_when(transfer, TransferState(event.outcome.value))),
            "transfer_mapped_uid": str(event.details.get("mapped_study_uid") or ""),
            "transfer_error___1": "1" if deid else "0",
            "transfer_error___2": "1" if failed and not deid else "0",
            "transfer_error___3": "0",
            "transfer_error_message": json.dumps({"error": event.error}) if failed else "",
            "transfer_active_proc_time": str(event.details.get("seconds", "")),
            "transfers_complete": "1" if failed else "2",
        }
    )
    return row
