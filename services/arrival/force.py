"""``fiona complete STUDY_UID``: an admin declares a study in flight complete now."""

import asyncio
from datetime import UTC, datetime

from fiona_common.bus import connect
from fiona_common.errors import BadInput, FionaError
from fiona_common.kvstate import cas_update
from fiona_common.layout import checked_uid
from fiona_common.nats_auth import NatsTarget, nats_target
from fiona_common.settings import Settings
from services.arrival.handlers import BUCKET, OPEN_BUCKET, mark_due
from services.arrival.progress import Status, StudyProgress, study_key


def force_complete(settings: Settings, study_uid: str, site: str) -> str:
    """Mark the study for completion (reason ``forced``); the arrival service completes it."""
    checked_uid(study_uid, "study_uid")
    return asyncio.run(_force(nats_target(settings), study_uid, site))


async def _force(nats: NatsTarget, study_uid: str, site: str) -> str:
    bus = await connect(nats, "fiona-complete")
    try:
        kv = await bus.kv(BUCKET)
        state: list[StudyProgress] = []

        def step(current: bytes | None) -> bytes | None:
            if current is None:
                raise BadInput("unknown_study", f"no study {study_uid} of site {site} in flight")
            study = StudyProgress.decode(current)
            state[:] = [study]
            if study.status is Status.COMPLETE or study.force or not study.series:
                return None
            study.force = True
            return study.encode()

        key = study_key(site, study_uid)
        if await cas_update(kv, key, step):
            await mark_due(await bus.kv(OPEN_BUCKET), key, datetime.now(UTC), at_once=True)
            return f"study {study_uid}: marked; the arrival service completes it as 'forced'"
        if state and state[0].status is Status.COMPLETE:
            return f"study {study_uid}: already complete (revision {state[0].revision})"
        if state and not state[0].series:
            raise FionaError(f"study {study_uid}: no instance counted yet")
        return f"study {study_uid}: already marked"
    finally:
        await bus.close()
