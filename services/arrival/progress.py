"""What the arrival service knows of one study in flight, and how events change it.

One JetStream key-value entry per study (``<site>.<study_uid>``) holds a :class:`StudyProgress`:
its series with the instances seen (as short hashes, so that redelivered or re-published events
never count twice), arrival times, the counts the data announce, and completion status. All
functions here are pure: the handlers run them inside a compare-and-set loop.
"""

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from fiona_common import outbox
from fiona_common.messages import (
    CompletionReason,
    Event,
    InstanceStored,
    SeriesReopened,
    StudyReopened,
)


class Status(StrEnum):
    OPEN = "open"
    COMPLETE = "complete"


class SeriesProgress(BaseModel):
    """One series of a study in flight."""

    instances: list[str] = Field(default_factory=list, description="hashes of SOP UIDs seen")
    calling_aet: str = ""
    called_aet: str = ""
    peer_address: str = ""
    first_at: datetime
    last_at: datetime
    opened_at: datetime  # first arrival of the current revision (after a reopen: the reopener)
    status: Status = Status.OPEN
    revision: int = 0  # completions so far
    reason: CompletionReason | None = None

    @property
    def count(self) -> int:
        return len(self.instances)


class ExpectedCount(BaseModel):
    count: int
    source: str  # which data told it, e.g. "ImagesInAcquisition", "pacs:CLINICAL"


PACS_SOURCE = "pacs"  # ExpectedCount.source of counts a PACS announced: "pacs:<node>"


def is_announced(expected: ExpectedCount | None) -> bool:
    """True for a count a PACS announced (services/arrival/expected.py): it beats the headers'."""
    return expected is not None and expected.source.startswith(f"{PACS_SOURCE}:")


class StudyProgress(BaseModel):
    """One study in flight (or completed: kept to notice late arrivals)."""

    site: str
    study_uid: str
    series: dict[str, SeriesProgress] = Field(default_factory=dict)
    expected: dict[str, ExpectedCount] = Field(default_factory=dict)  # by series UID
    expected_total: ExpectedCount | None = None  # instances of the study a PACS announced
    first_at: datetime
    last_at: datetime
    opened_at: datetime
    status: Status = Status.OPEN
    revision: int = 0
    reason: CompletionReason | None = None
    completed_at: datetime | None = None
    force: bool = False  # an admin asked to complete it now
    # Events decided but not yet published (published, then removed, by any replica).
    outbox: list[dict[str, Any]] = Field(default_factory=list)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> "StudyProgress":
        return cls.model_validate_json(data)

    @property
    def num_files(self) -> int:
        return sum(s.count for s in self.series.values())

    @property
    def in_flight(self) -> bool:
        """Still needs the sweeper: open with instances, or with events left to publish."""
        return (self.status is Status.OPEN and bool(self.series)) or bool(self.outbox)


def study_key(site: str, study_uid: str) -> str:
    return f"{site}.{study_uid}"


def instance_hash(sop_uid: str) -> str:
    # 48 bits: a clash within one series (1 in 10^7 for 30,000 images) undercounts by one.
    return hashlib.sha256(sop_uid.encode()).hexdigest()[:12]


def apply_instances(study: StudyProgress | None, events: list[InstanceStored]) -> StudyProgress:
    """The study once these instances (all of this study) are counted; seen ones change nothing.

    An instance of a completed series or study reopens it (a "reopened" event in the outbox).
    """
    first = events[0]
    if study is None or not study.series:  # new, or known only by announced counts
        at = min(e.received_at for e in events)
        expected = study.expected if study else {}
        study = StudyProgress(
            site=first.site,
            study_uid=first.study_uid,
            expected=dict(expected),
            expected_total=study.expected_total if study else None,
            first_at=at,
            last_at=at,
            opened_at=at,
        )
    else:
        study = study.model_copy(deep=True)
    seen = {uid: set(s.instances) for uid, s in study.series.items()}
    for event in events:
        sop = instance_hash(event.sop_uid)
        if sop in seen.get(event.series_uid, ()):
            continue
        seen.setdefault(event.series_uid, set()).add(sop)
        _count_instance(study, event, sop)
    return study


def _count_instance(study: StudyProgress, event: InstanceStored, sop: str) -> None:
    at = event.received_at
    series = study.series.get(event.series_uid)
    if series is None:
        series = study.series[event.series_uid] = SeriesProgress(
            calling_aet=event.calling_aet,
            called_aet=event.called_aet,
            peer_address=event.peer_address,
            first_at=at,
            last_at=at,
            opened_at=at,
        )
    elif series.status is Status.COMPLETE:
        series.status, series.opened_at = Status.OPEN, at
        post_event(
            study,
            SeriesReopened(
                site=study.site,
                study_uid=study.study_uid,
                series_uid=event.series_uid,
                revision=series.revision,
            ),
        )
    series.instances.append(sop)
    series.first_at, series.last_at = min(series.first_at, at), max(series.last_at, at)
    if study.status is Status.COMPLETE:
        study.status, study.opened_at, study.force = Status.OPEN, at, False
        post_event(
            study,
            StudyReopened(site=study.site, study_uid=study.study_uid, revision=study.revision),
        )
    study.first_at, study.last_at = min(study.first_at, at), max(study.last_at, at)


def apply_expected(
    study: StudyProgress | None,
    ids: tuple[str, str, str],
    expected: ExpectedCount,
    now: datetime,
) -> StudyProgress | None:
    """The study with this series' announced count; None when that changes nothing.

    ``ids`` is (site, study UID, series UID). A count may come before the series' first
    instance is counted here, so it is kept per series UID at study level; a study known only
    by counts waits for its instances (it is not in flight). A count a PACS announced is not
    replaced by one from the headers.
    """
    site, study_uid, series_uid = ids
    current = study.expected.get(series_uid) if study is not None else None
    if current == expected or (is_announced(current) and not is_announced(expected)):
        return None  # known already, or the PACS's count stands (it knows what it sends)
    if study is None:
        study = StudyProgress(
            site=site, study_uid=study_uid, first_at=now, last_at=now, opened_at=now
        )
    else:
        study = study.model_copy(deep=True)
    study.expected[series_uid] = expected
    return study


def post_event(study: StudyProgress, event: Event) -> None:
    outbox.post(study.outbox, event)


def expected_from_summary(summary: dict[str, Any]) -> ExpectedCount | None:
    """How many instances the series will have, when its data tell it.

    In order: NumberOfTemporalPositions x slices (the Siemens slice count from the CSA header or
    (0021,104F)) for time series stored one slice per file; ImagesInAcquisition otherwise (GE and
    Philips fill it with the whole acquisition). A mosaic holds a whole volume per file, so for
    it only NumberOfTemporalPositions counts. Missing, zero or non-numeric values tell nothing.
    """
    temporal = _positive(summary.get("NumberOfTemporalPositions"))
    mosaic = "MOSAIC" in str(summary.get("ImageType", "")).upper()
    if mosaic:
        return (
            ExpectedCount(count=temporal, source="NumberOfTemporalPositions") if temporal else None
        )
    slices = _positive(summary.get("NumSlices")) or _positive(summary.get("Slices"))
    if temporal and slices and temporal > 1:
        return ExpectedCount(count=temporal * slices, source="NumberOfTemporalPositions x slices")
    images = _positive(summary.get("ImagesInAcquisition"))
    if images:
        return ExpectedCount(count=images, source="ImagesInAcquisition")
    return None


def _positive(value: Any) -> int | None:
    try:
        number = int(float(str(value)))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
