"""Completion rules, on progress built from events (no network)."""

from datetime import UTC, datetime, timedelta

from fiona_common.messages import CompletionReason, InstanceStored, StoredVia
from services.arrival.decide import Policy, decide, next_deadline
from services.arrival.progress import (
    ExpectedCount,
    Status,
    StudyProgress,
    apply_expected,
    apply_instances,
    expected_from_summary,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STUDY = "1.2.3"
POLICY = Policy(quiet_seconds=15, grace_seconds=2, max_open_seconds=3600)


def stored(
    series: str, n: int, at: float, aet: str = "SCANNER", site: str = "default"
) -> InstanceStored:
    return InstanceStored(
        site=site,
        study_uid=STUDY,
        series_uid=series,
        sop_uid=f"{series}.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="MR",
        archive_path=f"site/archive/scp_{STUDY}/MR.{series}.{n}",
        size_bytes=1,
        calling_aet=aet,
        called_aet="FIONA",
        peer_address="10.0.0.1",
        via=StoredVia.DICOM,
        received_at=T0 + timedelta(seconds=at),
    )


def study_of(*batches: list[InstanceStored]) -> StudyProgress:
    study = None
    for batch in batches:
        study = apply_instances(study, batch)
    assert study is not None
    return study


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def outbox_types(study: StudyProgress) -> list[str]:
    return [item["type"] for item in study.outbox]


def test_series_and_study_complete_after_the_quiet_period() -> None:
    study = study_of([stored("1.2.3.1", n, n * 0.1) for n in range(10)])
    assert decide(study, POLICY, at(0.9 + 14.9)) is None
    done = decide(study, POLICY, at(0.9 + 15))
    assert done is not None and done.status is Status.COMPLETE
    assert outbox_types(done) == ["SeriesComplete", "StudyComplete"]
    event = done.outbox[1]["event"]
    assert (event["reason"], event["revision"], event["num_files"]) == ("quiet", 1, 10)
    assert decide(done, POLICY, at(100)) is None  # once


def test_the_same_instance_twice_counts_once() -> None:
    batch = [stored("1.2.3.1", n, 0) for n in range(3)]
    study = study_of(batch, batch, [batch[0]])
    assert study.num_files == 3
    assert apply_instances(study, batch) == study


def test_expected_count_completes_after_the_grace_not_the_quiet_period() -> None:
    study = study_of([stored("1.2.3.1", n, 0) for n in range(4)])
    study = apply_expected(
        study, ("default", STUDY, "1.2.3.1"), ExpectedCount(count=4, source="x"), T0
    )
    assert study is not None
    assert decide(study, POLICY, at(1.9)) is None
    done = decide(study, POLICY, at(2.0))
    assert done is not None and done.reason is CompletionReason.EXPECTED_COUNT
    assert next_deadline(study, POLICY) == at(2.0)


def test_short_of_the_expected_count_waits_then_times_out_incomplete() -> None:
    study = study_of([stored("1.2.3.1", n, 0) for n in range(3)])
    study = apply_expected(
        study, ("default", STUDY, "1.2.3.1"), ExpectedCount(count=5, source="x"), T0
    )
    assert study is not None
    assert decide(study, POLICY, at(600)) is None  # quiet, but two images are still missing
    assert next_deadline(study, POLICY) == at(3600)
    done = decide(study, POLICY, at(3600))
    assert done is not None and done.reason is CompletionReason.TIMEOUT_INCOMPLETE
    assert done.outbox[-1]["event"]["incomplete"] is True


def test_a_late_instance_reopens_and_the_next_completion_is_revision_2() -> None:
    study = decide(study_of([stored("1.2.3.1", 1, 0)]), POLICY, at(15))
    assert study is not None
    study.outbox.clear()
    reopened = apply_instances(study, [stored("1.2.3.1", 2, 100)])
    assert reopened.status is Status.OPEN
    assert outbox_types(reopened) == ["SeriesReopened", "StudyReopened"]
    reopened.outbox.clear()
    again = decide(reopened, POLICY, at(115))
    assert again is not None
    event = again.outbox[-1]["event"]
    assert (event["revision"], event["num_files"]) == (2, 2)
    # Resending an instance already counted reopens nothing.
    assert apply_instances(again, [stored("1.2.3.1", 1, 200)]).status is Status.COMPLETE


def test_a_study_waits_for_all_its_series_and_its_own_quiet_period() -> None:
    study = study_of([stored("1.2.3.1", 1, 0)], [stored("1.2.3.2", 1, 10)])
    partial = decide(study, POLICY, at(15))
    assert partial is not None and partial.status is Status.OPEN
    assert outbox_types(partial) == ["SeriesComplete"]
    partial.outbox.clear()
    done = decide(partial, POLICY, at(25))
    assert done is not None and outbox_types(done) == ["SeriesComplete", "StudyComplete"]


def test_quiet_periods_per_calling_aet_and_per_project() -> None:
    policy = Policy(
        quiet_seconds=15, quiet_seconds_by_aet={"SLOWPACS": 60}, quiet_seconds_by_site={"P1": 5}
    )
    slow = study_of([stored("1.2.3.1", 1, 0, aet="SLOWPACS")])
    assert decide(slow, policy, at(59)) is None
    assert decide(slow, policy, at(60)) is not None
    project = study_of([stored("1.2.3.1", 1, 0, aet="SLOWPACS", site="P1")])
    assert decide(project, policy, at(5)) is not None  # the project's period wins


def test_forced_completes_at_once() -> None:
    study = study_of([stored("1.2.3.1", 1, 0)])
    study.force = True
    done = decide(study, POLICY, at(0.1))
    assert done is not None and done.reason is CompletionReason.FORCED and not done.force


def test_a_trickle_that_never_goes_quiet_times_out() -> None:
    study = study_of([stored("1.2.3.1", n, n * 10.0) for n in range(361)])
    done = decide(study, POLICY, at(3600))
    assert done is not None and done.reason is CompletionReason.TIMEOUT_INCOMPLETE


def test_next_deadline_is_when_decide_first_finds_work() -> None:
    cases = [
        study_of([stored("1.2.3.1", 1, 0)], [stored("1.2.3.2", 1, 7)]),
        study_of([stored("1.2.3.1", n, n) for n in range(5)]),
    ]
    for study in cases:
        deadline = next_deadline(study, POLICY)
        assert deadline is not None
        assert decide(study, POLICY, deadline - timedelta(milliseconds=1)) is None
        assert decide(study, POLICY, deadline) is not None


def test_expected_counts_from_the_summary() -> None:
    assert expected_from_summary({"ImagesInAcquisition": "176"}) == ExpectedCount(
        count=176, source="ImagesInAcquisition"
    )
    fmri = {"NumberOfTemporalPositions": "200", "NumSlices": "36", "ImagesInAcquisition": "36"}
    assert expected_from_summary(fmri) == ExpectedCount(
        count=7200, source="NumberOfTemporalPositions x slices"
    )
    mosaic = {
        "ImageType": "['ORIGINAL', 'PRIMARY', 'M', 'MOSAIC']",
        "NumberOfTemporalPositions": "300",
        "ImagesInAcquisition": "36",
    }
    assert expected_from_summary(mosaic) == ExpectedCount(
        count=300, source="NumberOfTemporalPositions"
    )
    for nothing in ({}, {"ImagesInAcquisition": "0"}, {"ImagesInAcquisition": "many"}):
        assert expected_from_summary(nothing) is None


def test_a_count_known_before_any_instance_is_kept() -> None:
    early = apply_expected(
        None, ("default", STUDY, "1.2.3.1"), ExpectedCount(count=2, source="x"), T0
    )
    assert early is not None and not early.in_flight
    study = apply_instances(early, [stored("1.2.3.1", n, 5) for n in range(2)])
    assert study.expected["1.2.3.1"].count == 2
    assert decide(study, POLICY, at(7)) is not None
