"""Versioned event models, one per NATS subject (documented for integrators in docs/events.md).

Events carry UIDs, counts and hashes, never patient identifiers. Readers ignore unknown fields,
so adding a field is compatible; a breaking change bumps ``VERSION`` of that event.
"""

import zlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fiona_common.layout import checked_uid

DicomUid = Annotated[str, AfterValidator(lambda v: checked_uid(v, "uid"))]


class Event(BaseModel):
    """Base of every message: JSON with a ``schema`` version, deduplicated by ``msg_id``."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    subject: ClassVar[str]
    stream: ClassVar[str]
    VERSION: ClassVar[int] = 1
    # More than 1: published on ``<subject>.<n>``, n from partition_key(), so that a consumer
    # per partition sees all events of one key (a series...) and nothing else.
    partitions: ClassVar[int] = 1

    # ``schema`` would shadow a BaseModel attribute, hence the alias.
    schema_version: int = Field(default=1, alias="schema")

    def msg_id(self) -> str:
        """Deterministic ``Nats-Msg-Id``: the same fact published twice is stored once."""
        raise NotImplementedError

    def partition_key(self) -> str:
        """What decides the partition (only for events with ``partitions`` > 1)."""
        return ""

    @property
    def routed_subject(self) -> str:
        """The subject this event is published on: ``subject``, or ``subject.<partition>``."""
        if self.partitions <= 1:
            return self.subject
        return f"{self.subject}.{partition_of(self.partition_key(), self.partitions)}"

    @classmethod
    def subject_filter(cls, partition: int | None = None) -> str:
        """Subscription subject: one partition, or all of them (None)."""
        if cls.partitions <= 1:
            return cls.subject
        return f"{cls.subject}.{'>' if partition is None else partition}"

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        return cls.model_validate_json(data)


def event_types() -> dict[str, type[Event]]:
    """Every event class by name (for events stored as JSON, e.g. in an outbox)."""
    found: dict[str, type[Event]] = {}
    pending: list[type[Event]] = [Event]
    while pending:
        for cls in pending.pop().__subclasses__():
            found[cls.__name__] = cls
            pending.append(cls)
    return found


def partition_of(key: str, partitions: int) -> int:
    """Stable across processes and versions (CRC-32, not Python's salted hash)."""
    return zlib.crc32(key.encode()) % partitions


class StoredVia(StrEnum):
    """How an object entered FIONA."""

    DICOM = "dicom"
    INBOX = "inbox"
    RECONCILE = "reconcile"


class InstanceStored(Event):
    """One DICOM object is durably in ``site/archive`` (published by the receiver)."""

    subject: ClassVar[str] = "fiona.instance.stored"
    stream: ClassVar[str] = "FIONA_INSTANCES"
    partitions: ClassVar[int] = 16  # by series: one classifier replica at a time per series

    site: str
    study_uid: DicomUid
    series_uid: DicomUid
    sop_uid: DicomUid
    sop_class_uid: DicomUid
    transfer_syntax_uid: DicomUid
    modality: str
    archive_path: str = Field(description="relative to the site's DATADIR")
    size_bytes: int
    calling_aet: str
    called_aet: str
    peer_address: str
    via: StoredVia
    received_at: datetime

    def msg_id(self) -> str:
        return f"instance.stored:{self.site}:{self.study_uid}:{self.sop_uid}"

    def partition_key(self) -> str:
        return self.series_uid


class SeriesUpdated(Event):
    """A series' summary changed: one more instance, or new classification (classifier)."""

    subject: ClassVar[str] = "fiona.series.updated"
    stream: ClassVar[str] = "FIONA_SERIES"

    site: str
    study_uid: DicomUid
    series_uid: DicomUid
    revision: int = Field(description="increases with every change of this series' summary")
    num_files: int
    classify_types: list[str]
    modality: str
    patient_hash: str = Field(description="short hash of PatientID, never the ID itself")
    summary: dict[str, object] = Field(description="series JSON without identifying fields")

    def msg_id(self) -> str:
        return f"series.updated:{self.site}:{self.series_uid}:{self.revision}"


class CompletionReason(StrEnum):
    """Why the arrival service declared a series or study complete."""

    QUIET = "quiet"  # nothing arrived for the quiet period
    EXPECTED_COUNT = "expected-count"  # the count the data announced arrived, then a short grace
    TIMEOUT_INCOMPLETE = "timeout-incomplete"  # open too long: completed as it is, flagged
    FORCED = "forced"  # an admin said so (``fiona arrival complete``)


class SeriesComplete(Event):
    """A series has fully arrived (arrival); a later revision follows a reopen."""

    subject: ClassVar[str] = "fiona.series.complete"
    stream: ClassVar[str] = "FIONA_SERIES"

    site: str
    study_uid: DicomUid
    series_uid: DicomUid
    revision: int = Field(description="1 for the first completion, +1 after each reopen")
    num_files: int = Field(description="distinct instances received")
    expected: int | None = Field(description="the count the data announced, if any")
    reason: CompletionReason
    calling_aet: str
    first_received_at: datetime
    last_received_at: datetime
    completed_at: datetime

    def msg_id(self) -> str:
        return f"series.complete:{self.site}:{self.series_uid}:{self.revision}"


class SeriesReopened(Event):
    """An instance arrived for a series already declared complete (arrival)."""

    subject: ClassVar[str] = "fiona.series.reopened"
    stream: ClassVar[str] = "FIONA_SERIES"

    site: str
    study_uid: DicomUid
    series_uid: DicomUid
    revision: int = Field(description="the completed revision that is reopened")

    def msg_id(self) -> str:
        return f"series.reopened:{self.site}:{self.series_uid}:{self.revision}"


class SeriesCount(BaseModel):
    """One series in a :class:`StudyComplete`."""

    model_config = ConfigDict(frozen=True)

    series_uid: DicomUid
    num_files: int
    expected: int | None
    reason: CompletionReason


class StudyComplete(Event):
    """A study has fully arrived: all its series complete and the study quiet (arrival)."""

    subject: ClassVar[str] = "fiona.study.complete"
    stream: ClassVar[str] = "FIONA_STUDIES"

    site: str
    study_uid: DicomUid
    revision: int = Field(description="1 for the first completion, +1 after each reopen")
    num_files: int
    series: list[SeriesCount]
    reason: CompletionReason
    incomplete: bool = Field(description="a series timed out short of its expected count")
    calling_aets: list[str]
    first_received_at: datetime
    last_received_at: datetime
    completed_at: datetime

    def msg_id(self) -> str:
        return f"study.complete:{self.site}:{self.study_uid}:{self.revision}"


class StudyReopened(Event):
    """An instance arrived for a study already declared complete (arrival)."""

    subject: ClassVar[str] = "fiona.study.reopened"
    stream: ClassVar[str] = "FIONA_STUDIES"

    site: str
    study_uid: DicomUid
    revision: int = Field(description="the completed revision that is reopened")

    def msg_id(self) -> str:
        return f"study.reopened:{self.site}:{self.study_uid}:{self.revision}"


class TransferRequested(Event):
    """A study is to be pseudonymized for a project and delivered (redcap_sync -> exporter)."""

    subject: ClassVar[str] = "fiona.transfer.requested"
    stream: ClassVar[str] = "FIONA_TRANSFERS"
    partitions: ClassVar[int] = 8  # by study: one exporter at a time works on a study

    transfer_id: str = Field(description="stable per (study, project, participant, event)")
    request_no: int = Field(description="grows with each (re)request of the same transfer")
    site: str
    study_uid: DicomUid
    project: str
    # Named "participant" on the wire: "subject" is the event's NATS subject here.
    participant: str = Field(alias="participant_id", description="the pseudonym")
    event: str = Field(description="the project's visit/event name, may be empty")
    revision: int = Field(description="the study's arrival revision to send")
    reason: str = Field(description="routing, coupling, autoid, manual, retry, reopened...")
    study_completed_at: datetime | None = Field(
        default=None, description="when the arrival service declared the study complete"
    )

    def msg_id(self) -> str:
        return f"transfer.requested:{self.transfer_id}:{self.request_no}"

    def partition_key(self) -> str:
        return self.study_uid


class TransferOutcome(StrEnum):
    STARTED = "started"
    DELIVERED = "delivered"
    FAILED = "failed"


class TransferResult(Event):
    """What became of a transfer request (exporter -> redcap_sync)."""

    subject: ClassVar[str] = "fiona.transfer.result"
    stream: ClassVar[str] = "FIONA_TRANSFERS"

    transfer_id: str
    request_no: int
    site: str
    study_uid: DicomUid
    outcome: TransferOutcome
    error: str = ""
    details: dict[str, object] = Field(default_factory=dict)

    def msg_id(self) -> str:
        return f"transfer.result:{self.transfer_id}:{self.request_no}:{self.outcome.value}"
