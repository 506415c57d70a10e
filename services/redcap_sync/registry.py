"""The incoming-study registry (original Incoming) and the transfer-request state machine.

One key-value entry per study: what it is (description, date, senders, series with their
types; patient name, ID and accession number only as keyed hashes), its arrival revision, and
every transfer to a project with its state. All functions here are pure; the service runs them
inside a compare-and-set and publishes the events they leave in the outbox.

Transfer states (docs/projects.md has the diagram)::

    requested -> in-progress -> delivered
        |             |
        +-------------+--> failed -> requested (retried automatically, max_attempts in all)
                                 \\-> given-up
    delivered, failed, given-up -> requested (re-requested by a user; delivered also when the
                                              study is reopened by late objects)
"""

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from fiona_common import outbox
from fiona_common.messages import TransferRequested


class TransferState(StrEnum):
    REQUESTED = "requested"
    IN_PROGRESS = "in-progress"
    DELIVERED = "delivered"
    FAILED = "failed"
    GIVEN_UP = "given-up"


class Route(StrEnum):
    ROUTING = "routing"  # a routing rule matched sender and patient
    COUPLING = "coupling"  # the coupling list names the study
    AUTOID = "autoid"  # sent to a project's AutoID AE title: FIONA made the pseudonym
    MANUAL = "manual"  # fiona assign / the API
    REDCAP = "redcap"  # a transfers row someone added in REDCap's Incoming project


ALLOWED: dict[TransferState, set[TransferState]] = {
    TransferState.REQUESTED: {
        TransferState.IN_PROGRESS,
        TransferState.DELIVERED,
        TransferState.FAILED,
    },
    TransferState.IN_PROGRESS: {
        TransferState.DELIVERED,
        TransferState.FAILED,
        TransferState.IN_PROGRESS,
    },
    TransferState.FAILED: {TransferState.REQUESTED, TransferState.GIVEN_UP},
    TransferState.DELIVERED: {TransferState.REQUESTED},
    TransferState.GIVEN_UP: {TransferState.REQUESTED},
}


class Step(BaseModel):
    at: datetime
    state: TransferState
    note: str = ""


class Transfer(BaseModel):
    id: str
    project: str
    subject: str  # the pseudonym (participant ID in the project), not an identifier
    event: str = ""
    route: Route
    state: TransferState = TransferState.REQUESTED
    request_no: int = 1  # grows with every (re)request; results of older ones are ignored
    attempts: int = 1  # requests of the current series of retries
    revision: int = 1  # the study's arrival revision this request sends
    retry_at: datetime | None = None
    last_error: str = ""
    history: list[Step] = Field(default_factory=list)


class SeriesInfo(BaseModel):
    series_uid: str
    description: str = ""
    modality: str = ""
    num_files: int = 0
    classify_types: list[str] = Field(default_factory=list)


class StudyRecord(BaseModel):
    site: str
    study_uid: str
    description: str = ""
    study_date: str = ""
    study_time: str = ""
    calling_aet: str = ""
    called_aet: str = ""
    patient_id_hash: str = ""
    patient_name_hash: str = ""
    accession_hash: str = ""
    series: list[SeriesInfo] = Field(default_factory=list)
    num_files: int = 0
    revision: int = 0  # arrival revision (complete events seen)
    completed_at: datetime | None = None
    transfers: dict[str, Transfer] = Field(default_factory=dict)
    refusals: list[str] = Field(default_factory=list)  # why routes did not apply (latest few)
    outbox: list[dict[str, Any]] = Field(default_factory=list)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> "StudyRecord":
        return cls.model_validate_json(data)

    @property
    def assigned(self) -> bool:
        return bool(self.transfers)


def transfer_id(study_uid: str, project: str, subject: str, event: str) -> str:
    return hashlib.sha256(f"{study_uid}|{project}|{subject}|{event}".encode()).hexdigest()[:16]


class InvalidTransition(ValueError):
    pass


def _move(transfer: Transfer, state: TransferState, now: datetime, note: str = "") -> None:
    if state not in ALLOWED[transfer.state]:
        raise InvalidTransition(
            f"transfer {transfer.id}: {transfer.state} -> {state} is not allowed"
        )
    transfer.state = state
    transfer.history.append(Step(at=now, state=state, note=note))


def _announce(record: StudyRecord, transfer: Transfer, reason: str) -> None:
    outbox.post(
        record.outbox,
        TransferRequested(
            transfer_id=transfer.id,
            request_no=transfer.request_no,
            site=record.site,
            study_uid=record.study_uid,
            project=transfer.project,
            participant_id=transfer.subject,
            event=transfer.event,
            revision=transfer.revision,
            reason=reason,
            study_completed_at=record.completed_at,
        ),
    )


def request(
    record: StudyRecord, project: str, subject: str, event: str, route: Route, now: datetime
) -> Transfer | None:
    """Add a transfer request; None if the same (study, project, subject, event) exists."""
    ident = transfer_id(record.study_uid, project, subject, event)
    if ident in record.transfers:
        return None
    transfer = Transfer(
        id=ident,
        project=project,
        subject=subject,
        event=event,
        route=route,
        revision=max(record.revision, 1),
        history=[Step(at=now, state=TransferState.REQUESTED, note=route.value)],
    )
    record.transfers[ident] = transfer
    _announce(record, transfer, route.value)
    return transfer


def rerequest(record: StudyRecord, ident: str, now: datetime, reason: str) -> bool:
    """Request an existing transfer again (user, or a reopened study); False if in hand."""
    transfer = record.transfers[ident]
    if transfer.state in (TransferState.REQUESTED, TransferState.IN_PROGRESS):
        if transfer.revision >= record.revision:
            return False
    else:
        _move(transfer, TransferState.REQUESTED, now, reason)
    transfer.request_no += 1
    transfer.attempts = 1
    transfer.revision = max(record.revision, 1)
    transfer.retry_at = None
    _announce(record, transfer, reason)
    return True


def record_result(
    record: StudyRecord,
    ident: str,
    request_no: int,
    outcome: str,
    error: str,
    now: datetime,
    max_attempts: int,
    retry_delay: timedelta,
) -> bool:
    """Apply an exporter's result; False when it changes nothing (stale, repeated, unknown)."""
    transfer = record.transfers.get(ident)
    if transfer is None or request_no != transfer.request_no:
        return False  # a result of an older request: the newer one decides
    target = {
        "started": TransferState.IN_PROGRESS,
        "delivered": TransferState.DELIVERED,
        "failed": TransferState.FAILED,
    }[outcome]
    if transfer.state is target or target not in ALLOWED[transfer.state]:
        return False
    _move(transfer, target, now, error[:200])
    if target is TransferState.FAILED:
        transfer.last_error = error[:500]
        if transfer.attempts < max_attempts:
            transfer.retry_at = now + retry_delay
        else:
            _move(transfer, TransferState.GIVEN_UP, now, f"failed {transfer.attempts} times")
    return True


def retry_due(record: StudyRecord, now: datetime) -> bool:
    """Request again the failed transfers whose retry time has come; True if any."""
    changed = False
    for transfer in record.transfers.values():
        if (
            transfer.state is TransferState.FAILED
            and transfer.retry_at
            and transfer.retry_at <= now
        ):
            _move(transfer, TransferState.REQUESTED, now, "retry")
            transfer.request_no += 1
            transfer.attempts += 1
            transfer.retry_at = None
            _announce(record, transfer, "retry")
            changed = True
    return changed


def reopened(record: StudyRecord, revision: int, now: datetime) -> bool:
    """A later arrival revision: every transfer that is not given up sends the study again."""
    if revision <= record.revision:
        return False
    record.revision = revision
    for ident, transfer in record.transfers.items():
        if transfer.state is not TransferState.GIVEN_UP:
            rerequest(record, ident, now, "reopened")
    return True
