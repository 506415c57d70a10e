"""The transfer-request state machine and routes, without a network."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from services.redcap_sync.autoid import draw
from services.redcap_sync.registry import (
    Route,
    StudyRecord,
    TransferState,
    record_result,
    reopened,
    request,
    rerequest,
    retry_due,
)

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
DELAY = timedelta(minutes=5)


def record() -> StudyRecord:
    return StudyRecord(site="default", study_uid="1.2.3", revision=1)


def announced(r: StudyRecord) -> list[tuple[int, str]]:
    return [(i["event"]["request_no"], i["event"]["reason"]) for i in r.outbox]


def test_the_same_request_twice_is_one_transfer_and_one_event() -> None:
    r = record()
    first = request(r, "MEMO", "MEMO001", "baseline", Route.ROUTING, NOW)
    assert first is not None
    assert request(r, "MEMO", "MEMO001", "baseline", Route.MANUAL, NOW) is None
    assert request(r, "OTHER", "OTHER01", "", Route.MANUAL, NOW) is not None  # several projects
    assert len(r.transfers) == 2 and len(r.outbox) == 2


def test_delivered_after_started_and_stale_or_repeated_results_change_nothing() -> None:
    r = record()
    t = request(r, "MEMO", "MEMO001", "", Route.MANUAL, NOW)
    assert t is not None
    assert record_result(r, t.id, 1, "started", "", NOW, 3, DELAY)
    assert record_result(r, t.id, 1, "delivered", "", NOW, 3, DELAY)
    assert not record_result(r, t.id, 1, "delivered", "", NOW, 3, DELAY)  # redelivered result
    assert not record_result(r, t.id, 0, "failed", "old", NOW, 3, DELAY)  # an older request's
    assert r.transfers[t.id].state is TransferState.DELIVERED


def test_failures_are_retried_then_given_up() -> None:
    r = record()
    t = request(r, "MEMO", "MEMO001", "", Route.MANUAL, NOW)
    assert t is not None
    for attempt in (1, 2):
        assert record_result(r, t.id, attempt, "failed", "PACS refused", NOW, 3, DELAY)
        assert r.transfers[t.id].state is TransferState.FAILED
        assert not retry_due(r, NOW + DELAY / 2)
        assert retry_due(r, NOW + DELAY)
        assert r.transfers[t.id].state is TransferState.REQUESTED
    assert record_result(r, t.id, 3, "failed", "PACS refused", NOW, 3, DELAY)
    assert r.transfers[t.id].state is TransferState.GIVEN_UP
    assert [reason for _, reason in announced(r)] == ["manual", "retry", "retry"]
    assert rerequest(r, t.id, NOW, "user")  # a user may ask again
    assert r.transfers[t.id].state is TransferState.REQUESTED and r.transfers[t.id].request_no == 4


def test_a_reopened_study_is_sent_again_once_per_revision() -> None:
    r = record()
    t = request(r, "MEMO", "MEMO001", "", Route.MANUAL, NOW)
    assert t is not None
    record_result(r, t.id, 1, "delivered", "", NOW, 3, DELAY)
    assert reopened(r, 2, NOW)
    assert not reopened(r, 2, NOW)  # the same complete event redelivered
    transfer = r.transfers[t.id]
    assert (transfer.state, transfer.request_no, transfer.revision) == (
        TransferState.REQUESTED,
        2,
        2,
    )
    assert announced(r)[-1] == (2, "reopened")


def test_results_outside_the_machine_change_nothing() -> None:
    r = record()
    t = request(r, "MEMO", "MEMO001", "", Route.MANUAL, NOW)
    assert t is not None
    record_result(r, t.id, 1, "delivered", "", NOW, 3, DELAY)
    assert not record_result(r, t.id, 1, "started", "", NOW, 3, DELAY)  # late "started"
    assert r.transfers[t.id].state is TransferState.DELIVERED
    assert [s.state for s in r.transfers[t.id].history] == ["requested", "delivered"]


@pytest.mark.parametrize(
    "pattern", [r"^DEMO[0-9]{4}$", r"^[A-Z]{2}-\d{3}[a-f]$", r"^P(0[1-9]|[1-9][0-9])_\d{2}$"]
)
def test_autoid_draws_match_the_project_pattern(pattern: str) -> None:
    drawn = {draw(pattern) for _ in range(50)}
    assert all(re.fullmatch(pattern, d) for d in drawn)
    assert len(drawn) > 40  # random, not a sequence derived from anything
