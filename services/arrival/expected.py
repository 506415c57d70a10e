"""Counts a PACS announced for a study being retrieved (``fiona pacs move/get``), and their effect.

Before it retrieves a study, ``fiona pacs`` asks the PACS how many instances the study and each
of its series hold and puts that into the ``fiona_expected`` key-value bucket as an
:class:`ExpectedStudy` (key ``<site>.<study_uid>``, documented in docs/events.md). The arrival
service follows the bucket and keeps the counts in the study's progress, where they beat the
counts the headers announce (the PACS knows what it will send). A study then completes once
every announced series and the announced total have arrived, after the grace instead of the
quiet period. A newer document for a study replaces the PACS counts of the older one; one
without counts withdraws them (the study completes by its quiet period again).
"""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fiona_common.messages import DicomUid
from services.arrival.progress import (
    PACS_SOURCE,
    ExpectedCount,
    StudyProgress,
    is_announced,
    study_key,
)


class ExpectedStudy(BaseModel):
    """One document of the ``fiona_expected`` bucket (schema 1)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    schema_version: int = Field(default=1, alias="schema")
    site: str
    study_uid: DicomUid
    node: str  # the PACS that announced it (its name in PACS_NODES)
    instances: int | None = Field(default=None, ge=0)  # NumberOfStudyRelatedInstances
    # NumberOfSeriesRelatedInstances by SeriesInstanceUID
    series: dict[DicomUid, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    recorded_at: datetime

    @property
    def key(self) -> str:
        return study_key(self.site, self.study_uid)

    def encode(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def apply_expected_study(
    study: StudyProgress | None, doc: ExpectedStudy, now: datetime
) -> StudyProgress | None:
    """The study with the PACS counts of ``doc`` in place of earlier ones; None if unchanged.

    A study not seen yet is created known only by its counts (not in flight until its first
    instance is counted). Counts from headers of series the PACS did not list stay.
    """
    source = f"{PACS_SOURCE}:{doc.node}"
    if study is None:
        study = StudyProgress(
            site=doc.site, study_uid=doc.study_uid, first_at=now, last_at=now, opened_at=now
        )
    expected = {uid: e for uid, e in study.expected.items() if not is_announced(e)}
    for uid, count in doc.series.items():
        if count > 0:
            expected[uid] = ExpectedCount(count=count, source=source)
    total = ExpectedCount(count=doc.instances, source=source) if doc.instances else None
    if expected == study.expected and total == study.expected_total:
        return None
    return study.model_copy(update={"expected": expected, "expected_total": total}, deep=True)
