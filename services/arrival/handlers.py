"""Events -> study progress in the key-value bucket (instance counts, announced counts)."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from nats.js.kv import KeyValue
from pydantic import BaseModel

from fiona_common.bus import Bus
from fiona_common.clock import utc_now
from fiona_common.errors import BadInput
from fiona_common.kvstate import cas_update
from fiona_common.layout import Layout
from fiona_common.messages import InstanceStored, SeriesUpdated
from services.arrival import metrics
from services.arrival.decide import Policy, next_deadline
from services.arrival.expected import ExpectedStudy, apply_expected_study
from services.arrival.markers import touch_markers
from services.arrival.progress import (
    StudyProgress,
    apply_expected,
    apply_instances,
    expected_from_summary,
    study_key,
)

log = logging.getLogger(__name__)

BUCKET = "fiona_arrival"
# The studies in flight and when each is next due: small, so every replica can follow it whole
# (the progress entries of completed studies stay in BUCKET, for late arrivals, and may be big).
OPEN_BUCKET = "fiona_arrival_open"


class OpenStudy(BaseModel):
    """Index entry of a study in flight; ``due`` None once it no longer is."""

    revision: int  # of the progress entry it was computed from; older ones never overwrite
    due: datetime | None
    opened_at: datetime | None = None
    mark: bool = False  # "look now", set before a progress write; any index of it replaces it


@dataclass
class ArrivalDeps:
    layouts: dict[str, Layout]
    kv: KeyValue  # BUCKET: progress per study
    open_kv: KeyValue  # OPEN_BUCKET: the index of studies in flight
    bus: Bus
    policy: Policy
    clock: Callable[[], datetime] = utc_now
    # Set after this replica changed a study, so its sweeper looks again at once.
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def on_instances_stored(
    events: list[InstanceStored], deps: ArrivalDeps
) -> list[BadInput | None]:
    """Count a batch into the studies it belongs to (one compare-and-set per study)."""
    outcomes: list[BadInput | None] = [None] * len(events)
    studies: dict[tuple[str, str], list[InstanceStored]] = {}
    for i, event in enumerate(events):
        if event.site not in deps.layouts:
            outcomes[i] = BadInput("unknown_site", f"no data directory for site {event.site}")
            metrics.INSTANCES.labels("refused").inc()
        else:
            studies.setdefault((event.site, event.study_uid), []).append(event)
    await asyncio.gather(*(count_study(batch, deps) for batch in studies.values()))
    return outcomes


async def count_study(events: list[InstanceStored], deps: ArrivalDeps) -> None:
    first = events[0]
    key = study_key(first.site, first.study_uid)
    before: list[int] = [0]
    # Indexed (due now) before the progress is written: a crash in between leaves the sweeper
    # a study to look at, never a study it does not know of.
    await mark_due(deps.open_kv, key, deps.clock())

    def step(current: bytes | None) -> bytes:
        study = StudyProgress.decode(current) if current is not None else None
        before[0] = study.num_files if study else 0
        return apply_instances(study, events).encode()

    written = await cas_update(deps.kv, key, step)
    if written is None:
        metrics.INSTANCES.labels("duplicate").inc(len(events))
        return
    study = StudyProgress.decode(written[0])
    await reindex(deps, key, study, written[1])
    counted = study.num_files - before[0]
    metrics.INSTANCES.labels("counted").inc(counted)
    metrics.INSTANCES.labels("duplicate").inc(len(events) - counted)
    await asyncio.to_thread(touch_markers, deps.layouts[first.site], study)
    deps.changed.set()


async def on_series_updated(event: SeriesUpdated, deps: ArrivalDeps) -> None:
    """Keep the count a series' data announce (the classifier's summary tells it)."""
    expected = expected_from_summary(event.summary)
    if expected is None:
        return
    ids = (event.site, event.study_uid, event.series_uid)
    now = deps.clock()

    def step(current: bytes | None) -> bytes | None:
        study = StudyProgress.decode(current) if current is not None else None
        updated = apply_expected(study, ids, expected, now)
        return None if updated is None else updated.encode()

    key = study_key(event.site, event.study_uid)
    written = await cas_update(deps.kv, key, step)
    if written is not None:
        await reindex(deps, key, StudyProgress.decode(written[0]), written[1])


async def on_study_expected(doc: ExpectedStudy, deps: ArrivalDeps) -> None:
    """Keep the counts a PACS announced for a study being retrieved (``fiona pacs``)."""
    if doc.site not in deps.layouts:
        log.warning("announced counts for an unknown site ignored", extra={"site": doc.site})
        return
    now = deps.clock()

    def step(current: bytes | None) -> bytes | None:
        study = StudyProgress.decode(current) if current is not None else None
        updated = apply_expected_study(study, doc, now)
        return None if updated is None else updated.encode()

    written = await cas_update(deps.kv, doc.key, step)
    if written is not None:
        await reindex(deps, doc.key, StudyProgress.decode(written[0]), written[1])


async def mark_due(open_kv: KeyValue, key: str, now: datetime, at_once: bool = False) -> None:
    """Make sure the study is indexed as in flight: due now if it was not (or ``at_once``)."""

    def step(current: bytes | None) -> bytes | None:
        entry = OpenStudy.model_validate_json(current) if current is not None else None
        if entry is not None and entry.due is not None and not at_once:
            return None  # in flight already: its own deadline stands
        revision = entry.revision if entry is not None else 0
        return OpenStudy(revision=revision, due=now, mark=True).model_dump_json().encode()

    await cas_update(open_kv, key, step)


async def reindex(deps: ArrivalDeps, key: str, study: StudyProgress | None, revision: int) -> None:
    """Bring the study's index entry up to the progress written at ``revision``."""
    due = None
    if study is not None and study.in_flight:
        due = deps.clock() if study.outbox else next_deadline(study, deps.policy)
    opened = study.opened_at if study is not None else None
    value = OpenStudy(revision=revision, due=due, opened_at=opened).model_dump_json().encode()

    def step(current: bytes | None) -> bytes | None:
        entry = OpenStudy.model_validate_json(current) if current is not None else None
        if entry is not None and (entry.revision, not entry.mark) >= (revision, True):
            return None  # a newer write already indexed it
        return value

    await cas_update(deps.open_kv, key, step)
    deps.changed.set()
