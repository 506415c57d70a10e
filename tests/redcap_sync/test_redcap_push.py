"""What the REDCap writer puts into a transfers row, and that a row never moves backwards."""

from __future__ import annotations

from datetime import UTC, datetime

from fiona_common.messages import TransferOutcome, TransferResult
from services.redcap_sync.redcap_push import RANK, Slot, _result_row, progress_of
from services.redcap_sync.registry import Route, StudyRecord, request

NOW = datetime(2026, 11, 28, 10, 5, tzinfo=UTC)


def test_a_row_only_moves_forward_by_request_number_then_state() -> None:
    slot = Slot(3, progress_of({"transfer_request_no": "1", "transfer_status": "delivered"}))
    assert slot.progress == (1, 2)
    assert not slot.advance((1, RANK["started"]))  # a late "started" of the same request
    assert not slot.advance((1, RANK["requested"]))
    assert slot.advance((2, RANK["requested"]))  # the study was sent again
    assert not slot.advance((2, RANK["requested"]))  # the same write again (redelivery)
    assert slot.advance((2, RANK["failed"]))
    # A person's row (no FIONA fields yet) takes any FIONA state.
    assert Slot(1, progress_of({"transfer_status": ""})).advance((1, RANK["requested"]))


def test_result_rows_carry_flags_message_and_time() -> None:
    record = StudyRecord(site="default", study_uid="1.2.3", revision=1)
    transfer = request(record, "MEMO", "MEMO001", "", Route.MANUAL, NOW)
    assert transfer is not None
    failed = TransferResult(
        transfer_id=transfer.id,
        request_no=1,
        site="default",
        study_uid="1.2.3",
        outcome=TransferOutcome.FAILED,
        error="association rejected",
        details={"seconds": 1.5},
    )
    row = _result_row(failed, transfer, 4)
    assert row["redcap_repeat_instance"] == 4 and row["transfer_request_no"] == "1"
    assert (row["transfer_error___1"], row["transfer_error___2"]) == ("0", "1")
    assert (
        row["transfers_complete"] == "1" and "association rejected" in row["transfer_error_message"]
    )
    started = failed.model_copy(update={"outcome": TransferOutcome.STARTED})
    assert set(_result_row(started, transfer, 4)) == {
        "study_instance_uid",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
        "transfer_status",
        "transfer_request_no",
    }
