"""Arrival's completion with the counts a PACS announced for a retrieved study (no network)."""

from datetime import UTC, datetime, timedelta

import pytest

from fiona_common.errors import BadInput
from fiona_common.messages import InstanceStored, StoredVia
from services.arrival.decide import Policy, decide, next_deadline
from services.arrival.expected import ExpectedStudy, apply_expected_study
from services.arrival.progress import (
    ExpectedCount,
    Status,
    StudyProgress,
    apply_expected,
    apply_instances,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STUDY, S1, S2 = "1.2.3", "1.2.3.1", "1.2.3.2"
POLICY = Policy(quiet_seconds=60, grace_seconds=2, max_open_seconds=3600)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stored(series: str, n: int, seconds: float) -> InstanceStored:
    return InstanceStored(
        site="default",
        study_uid=STUDY,
        series_uid=series,
        sop_uid=f"{series}.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="MR",
        archive_path=f"site/archive/scp_{STUDY}/MR.{series}.{n}",
        size_bytes=1,
        calling_aet="ORTHANC",
        called_aet="FIONA",
        peer_address="10.0.0.1",
        via=StoredVia.DICOM,
        received_at=at(seconds),
    )


def announced(series: dict[str, int], instances: int | None = None) -> ExpectedStudy:
    return ExpectedStudy(
        site="default",
        study_uid=STUDY,
        node="CLINICAL",
        instances=instances,
        series=series,
        recorded_at=T0,
    )


def with_counts(study: StudyProgress | None, doc: ExpectedStudy) -> StudyProgress:
    updated = apply_expected_study(study, doc, T0)
    assert updated is not None
    return updated


def receive(study: StudyProgress | None, series: str, n: int, seconds: float) -> StudyProgress:
    return apply_instances(study, [stored(series, i, seconds) for i in range(n)])


def reason_of(study: StudyProgress) -> str:
    return str(study.outbox[-1]["event"]["reason"])


def test_a_retrieved_study_completes_after_the_grace_once_every_announced_series_is_in() -> None:
    study = with_counts(None, announced({S1: 3, S2: 2}, instances=5))
    assert study.series == {} and not study.in_flight  # known only by its counts
    study = receive(study, S1, 3, 0)
    assert decide(study, POLICY, at(30)) is not None  # S1 complete, the study waits for S2
    study = receive(decide(study, POLICY, at(30)), S2, 2, 31)
    assert next_deadline(study, POLICY) == at(33)
    done = decide(study, POLICY, at(33))
    assert done is not None and done.status is Status.COMPLETE
    assert reason_of(done) == "expected-count"
    assert done.outbox[-1]["event"]["incomplete"] is False


def test_a_study_short_of_an_announced_series_waits_then_times_out_incomplete() -> None:
    study = receive(with_counts(None, announced({S1: 3, S2: 2})), S1, 3, 0)
    study = decide(study, POLICY, at(2))  # S1 by its count
    assert study is not None and study.status is Status.OPEN
    assert decide(study, POLICY, at(600)) is None  # far past the quiet period: still waiting
    assert next_deadline(study, POLICY) == at(3600)
    done = decide(study, POLICY, at(3600))
    assert done is not None and reason_of(done) == "timeout-incomplete"
    assert done.outbox[-1]["event"]["incomplete"] is True


def test_a_study_total_alone_completes_series_without_counts_after_the_grace() -> None:
    study = receive(with_counts(None, announced({}, instances=4)), S1, 2, 0)
    assert next_deadline(study, POLICY) == at(60)  # total not reached: the quiet period
    study = receive(study, S2, 2, 1)
    assert next_deadline(study, POLICY) == at(2)  # S1's grace, then S2's and the study's
    done = decide(study, POLICY, at(3))
    assert done is not None and done.status is Status.COMPLETE
    assert reason_of(done) == "expected-count"


def test_the_pacs_count_beats_the_count_from_the_headers() -> None:
    study = with_counts(None, announced({S1: 3}))
    headers = ExpectedCount(count=100, source="ImagesInAcquisition")
    assert apply_expected(study, ("default", STUDY, S1), headers, T0) is None
    study = receive(study, S1, 3, 0)
    done = decide(study, POLICY, at(2))
    assert done is not None and reason_of(done) == "expected-count"


def test_a_newer_announcement_replaces_the_counts_and_an_empty_one_withdraws_them() -> None:
    headers = ExpectedCount(count=7, source="ImagesInAcquisition")
    study = apply_expected(None, ("default", STUDY, S2), headers, T0)
    study = with_counts(study, announced({S1: 3}, instances=10))
    assert apply_expected_study(study, announced({S1: 3}, instances=10), T0) is None  # again
    study = with_counts(study, announced({}))
    assert study.expected == {S2: headers} and study.expected_total is None
    study = receive(study, S1, 3, 0)
    assert decide(study, POLICY, at(59)) is None  # back to the quiet period
    done = decide(study, POLICY, at(60))
    assert done is not None and reason_of(done) == "quiet"


def test_counts_announced_before_the_first_instance_survive_it() -> None:
    study = receive(with_counts(None, announced({S1: 2}, instances=2)), S1, 1, 0)
    assert study.expected_total is not None and study.expected_total.count == 2
    assert S1 in study.expected


@pytest.mark.parametrize(
    "document",
    [
        b'{"schema": 1, "site": "default", "study_uid": "../etc", "node": "X",'
        b' "recorded_at": "2026-01-01T00:00:00Z"}',
        b'{"schema": 1, "site": "default", "study_uid": "1.2.3", "node": "X",'
        b' "series": {"1.2.3.4": -1}, "recorded_at": "2026-01-01T00:00:00Z"}',
    ],
)
def test_a_document_with_a_bad_uid_or_count_is_refused(document: bytes) -> None:
    with pytest.raises((ValueError, BadInput)):
        ExpectedStudy.model_validate_json(document)
