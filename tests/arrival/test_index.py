"""The index of studies in flight, against a real nats-server: crash windows and stale writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fiona_common.bus import connect
from services.arrival.decide import Policy
from services.arrival.handlers import ArrivalDeps, OpenStudy, mark_due, reindex
from services.arrival.progress import StudyProgress
from tests.peers import NatsServer

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)


def open_study(done: bool = False) -> StudyProgress:
    study = StudyProgress.model_validate(
        {
            "site": "default",
            "study_uid": "1.2.3",
            "series": {
                "1.2.3.4": {
                    "instances": ["abc"],
                    "first_at": T0,
                    "last_at": T0,
                    "opened_at": T0,
                }
            },
            "first_at": T0,
            "last_at": T0,
            "opened_at": T0,
        }
    )
    if done:
        study.status = study.status.COMPLETE
    return study


async def test_index_entries_follow_the_newest_progress_and_marks_are_replaced(
    nats_server: NatsServer,
) -> None:
    bus = await connect(nats_server.url, "test")
    deps = ArrivalDeps({}, await bus.kv("p"), await bus.kv("o"), bus, Policy(quiet_seconds=15))

    async def index() -> OpenStudy:
        entry = await deps.open_kv.get("k")
        return OpenStudy.model_validate_json(entry.value or b"")

    await mark_due(deps.open_kv, "k", T0)  # before the first progress write
    assert (await index()).mark and (await index()).due == T0
    await reindex(deps, "k", open_study(), 5)
    assert (await index()).due == T0 + timedelta(seconds=15) and not (await index()).mark
    await reindex(deps, "k", open_study(done=True), 4)  # stale: an older revision
    assert (await index()).due is not None
    await reindex(deps, "k", open_study(done=True), 6)
    assert (await index()).due is None  # no longer in flight
    await mark_due(deps.open_kv, "k", T0)  # a late instance is about to reopen it
    assert (await index()).due == T0 and (await index()).revision == 6
    await reindex(deps, "k", open_study(done=True), 6)  # the writer crashed: same revision
    assert (await index()).due is None  # the sweeper's look replaces the mark
    await bus.close()
