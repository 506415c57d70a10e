"""The timers: every replica watches the studies in flight and completes those that are due.

The timers are not kept in memory: each replica follows the index of studies in flight (a
key-value watch; each entry says when its study is next due, computed from the stored progress
by whoever wrote it), so a restarted or added replica knows them all.
Completing is a compare-and-set on the study entry, so of two replicas that find the same
study due, one writes the completion (with its events in the entry's outbox) and the other
finds it already complete. Outbox events are published with deterministic message ids (the
server drops a second publish) and then removed from the entry.

A replica also never decides on input that is not read yet: completions are judged at the
publish time of the oldest instance event that the arrival consumer or the classifier has not
acknowledged, if any. Waiting for the classifier too matters: the exporter sends what the
classifier indexed, so a study completed while its last objects were still queued there (the
classifier restarting, say) would be sent without them, and nothing would reopen it.
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE

from fiona_common import outbox
from fiona_common.bus import NATS_DOWN
from fiona_common.errors import Unavailable
from fiona_common.kvstate import cas_update
from fiona_common.messages import (
    Event,
    InstanceStored,
    SeriesComplete,
    SeriesReopened,
    StudyComplete,
)
from fiona_common.metrics import Health
from services.arrival import metrics
from services.arrival.decide import decide
from services.arrival.handlers import ArrivalDeps, OpenStudy, reindex
from services.arrival.markers import remove_markers
from services.arrival.progress import Status, StudyProgress

log = logging.getLogger(__name__)

IDLE_WAKE_SECONDS = 1.0
HELD_BACK_WAKE_SECONDS = 0.2


class Sweeper:
    def __init__(self, deps: ArrivalDeps, consumers: Sequence[str], health: Health) -> None:
        """``consumers``: the durables (on the instance events) whose input must be read first."""
        self.deps, self.consumers, self.health = deps, list(consumers), health
        self.in_flight: dict[str, OpenStudy] = {}
        self.completions: dict[str, int] = {}

    async def follow(self, stop: asyncio.Event) -> None:
        """Mirror the index of studies in flight (finished ones are dropped)."""
        watcher = await self.deps.open_kv.watchall()
        try:
            while not stop.is_set():
                try:
                    entry = await watcher.updates(timeout=1.0)
                except NatsTimeout:
                    continue
                if entry is None:
                    continue  # "initial values delivered" marker
                study = None
                if entry.operation not in (KV_DEL, KV_PURGE) and entry.value:
                    study = OpenStudy.model_validate_json(entry.value)
                if study is not None and study.due is not None:
                    self.in_flight[entry.key] = study
                else:
                    self.in_flight.pop(entry.key, None)
                self.deps.changed.set()
        finally:
            with contextlib.suppress(*NATS_DOWN):
                await watcher.stop()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.deps.changed.clear()
            wait = IDLE_WAKE_SECONDS
            try:
                wait = await self.sweep()
            except (Unavailable, *NATS_DOWN) as err:
                log.warning("sweep failed, retrying", extra={"error": type(err).__name__})
            self._report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deps.changed.wait(), wait)

    async def sweep(self) -> float:
        """Settle what is due; seconds until the next deadline (at most IDLE_WAKE_SECONDS)."""
        now = self.deps.clock()
        due, upcoming = [], []
        for key, study in list(self.in_flight.items()):
            if study.due is not None and study.due <= now:
                due.append(key)
            elif study.due is not None:
                upcoming.append((study.due - now).total_seconds())
        if not due:
            return max(0.01, min([IDLE_WAKE_SECONDS, *upcoming]))
        judged_at = min(now, await self.inputs_read_until())
        progressed = [await self.settle(key, judged_at) for key in due]
        # Nothing moved (input not read yet...): look again soon, without spinning.
        return 0.01 if any(progressed) else HELD_BACK_WAKE_SECONDS

    async def settle(self, key: str, judged_at: datetime) -> bool:
        """Complete what is due in this study and publish its outbox; True if it changed."""

        def step(current: bytes | None) -> bytes | None:
            if current is None:
                return None
            decided = decide(StudyProgress.decode(current), self.deps.policy, judged_at)
            return None if decided is None else decided.encode()

        decided = await cas_update(self.deps.kv, key, step)
        published = await self.publish_outbox(key)
        try:
            entry = await self.deps.kv.get(key)
            study, revision = StudyProgress.decode(entry.value or b"{}"), entry.revision or 0
        except KeyNotFoundError:
            study, revision = None, 0
        await reindex(self.deps, key, study, revision)
        return published or decided is not None

    async def publish_outbox(self, key: str) -> bool:
        """Publish the events in the study's outbox, then take them out; True if any."""

        async def remove_finished_markers(study: StudyProgress) -> None:
            layout = self.deps.layouts.get(study.site)
            if study.status is Status.COMPLETE and layout is not None:
                await asyncio.to_thread(remove_markers, layout, study)

        removed = await outbox.flush(
            self.deps.kv, key, self.deps.bus, StudyProgress.decode, remove_finished_markers
        )
        for event in removed:
            self._account(event)
        return bool(removed)

    def _account(self, event: Event) -> None:
        # Counted by the replica whose write took the event out of the outbox: once.
        if isinstance(event, SeriesComplete | StudyComplete):
            level = "series" if isinstance(event, SeriesComplete) else "study"
            metrics.COMPLETIONS.labels(level, event.reason.value).inc()
            delay = (event.completed_at - event.last_received_at).total_seconds()
            metrics.COMPLETE_DELAY.labels(level).observe(max(0.0, delay))
            name = f"{level}:{event.reason.value}"
            self.completions[name] = self.completions.get(name, 0) + 1
            if isinstance(event, StudyComplete):
                log.info(
                    "study complete",
                    extra={
                        "revision": event.revision,
                        "reason": event.reason.value,
                        "num_files": event.num_files,
                        "series": len(event.series),
                    },
                )
        else:
            level = "series" if isinstance(event, SeriesReopened) else "study"
            metrics.REOPENED.labels(level).inc()

    async def inputs_read_until(self) -> datetime:
        """Publish time of the oldest instance event a watched consumer has not handled yet
        (now if there is none; a consumer not created yet holds nothing back)."""
        oldest = self.deps.clock()
        for durable in self.consumers:
            with contextlib.suppress(NotFoundError):
                oldest = min(oldest, await self._unread_since(durable) or oldest)
        return oldest

    async def _unread_since(self, durable: str) -> datetime | None:
        js = self.deps.bus.js
        info = await js.consumer_info(InstanceStored.stream, durable)
        if not info.num_pending and not info.num_ack_pending:
            return None
        # For a consumer of one partition the stream's next message may be another
        # partition's: published no later than this consumer's own next one, so still safe.
        first = await js.get_msg(InstanceStored.stream, (info.ack_floor.stream_seq or 0) + 1)
        return first.time

    def _report(self) -> None:
        now = self.deps.clock()
        ages = [(now - s.opened_at).total_seconds() for s in self.in_flight.values() if s.opened_at]
        metrics.IN_FLIGHT.set(len(self.in_flight))
        metrics.OLDEST.set(max(ages, default=0.0))
        self.health.set_detail("studies_in_flight", len(self.in_flight))
        self.health.set_detail("oldest_in_flight_seconds", round(max(ages, default=0.0), 1))
        self.health.set_detail("completions", dict(sorted(self.completions.items())))
