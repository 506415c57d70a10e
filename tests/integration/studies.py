"""Studies as the classifier and arrival leave them, for the registry's tests: summaries on disk,
"study complete" events, and the transfer requests redcap_sync publishes."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fiona_common.bus import connect
from fiona_common.messages import CompletionReason, Event, StudyComplete
from tests.fiona_process import read_events


def uid() -> str:
    return f"1.2.826.0.1.{secrets.randbelow(10**12)}"


def write_study(
    data: Path,
    patient_id: str,
    called: str = "FIONA",
    calling: str = "SCANNER",
    accession: str = "",
    series_count: int = 1,
) -> str:
    """A study as the classifier leaves it: series summaries under site/raw."""
    study = uid()
    folder = data / "site" / "raw" / study
    folder.mkdir(parents=True)
    for number in range(series_count):
        series = uid()
        summary = {
            "StudyInstanceUID": study,
            "SeriesInstanceUID": series,
            "PatientID": patient_id,
            "PatientName": f"Doe^{patient_id}",
            "AccessionNumber": accession,
            "StudyDescription": "MR head",
            "StudyDate": "20261127",
            "StudyTime": "101500",
            "SeriesDescription": f"T1 {number}" if number else "T1",
            "Modality": "MR",
            "NumFiles": "3",
            "ClassifyType": ["T1"],
            "IncomingConnection": {
                "AETitleCaller": calling,
                "AETitleCalled": called,
                "CallerIP": "10.0.0.1",
            },
        }
        (folder / f"{series}.json").write_text(json.dumps(summary))
    return study


def complete(study: str, revision: int = 1) -> StudyComplete:
    now = datetime.now(UTC)
    return StudyComplete(
        site="default",
        study_uid=study,
        revision=revision,
        num_files=3,
        series=[],
        reason=CompletionReason.QUIET,
        incomplete=False,
        calling_aets=["SCANNER"],
        first_received_at=now,
        last_received_at=now,
        completed_at=now,
    )


def publish(url: str, *events: Event) -> None:
    async def send() -> None:
        bus = await connect(url, "test")
        await bus.ensure_streams()
        for event in events:
            await bus.publish(event)
        await bus.close()

    asyncio.run(send())


def requests(url: str) -> list[dict[str, Any]]:
    return read_events(url, "fiona.transfer.requested.>", "FIONA_TRANSFERS")
