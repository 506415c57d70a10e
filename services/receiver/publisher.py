"""Publishing "instance stored" events without ever failing a sender because NATS is away.

A C-STORE is answered once the object is durable on disk; its event is queued here and
published to JetStream in the background, retried until the server acknowledges it. Nothing is
lost if NATS is down for long, or if the receiver dies with events still queued: a *watermark*
on disk says "every archived file older than this has been published", and on start (or after
the in-memory queue overflowed) the archive is rescanned from there (:mod:`reconcile`).
Re-publishing is harmless: every event has a deterministic ``Nats-Msg-Id`` and consumers are
idempotent.
"""

import asyncio
import json
import logging
import threading
import time
from collections import deque
from pathlib import Path

from fiona_common.bus import Bus
from fiona_common.layout import write_atomic
from fiona_common.messages import InstanceStored
from services.receiver import metrics

log = logging.getLogger(__name__)

# How far before the oldest unpublished object the watermark stays: covers the time between a
# file's last write and its event being queued, with a wide margin.
WATERMARK_SLACK_SECONDS = 120.0
BATCH = 256
# Publishing one event at a time costs several times the CPU per event of a batch (nats-py's
# per-request overhead), and that CPU is taken from the DICOM threads.
LINGER_SECONDS = 0.02


class Watermark:
    """Per data directory: archive files modified before ``value`` have their events published."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> float:
        try:
            return float(json.loads(self.path.read_text())["published_before"])
        except FileNotFoundError:
            return 0.0  # never ran here: scan everything once
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable watermark, rescanning the whole archive")
            return 0.0

    def write(self, value: float) -> None:
        write_atomic(self.path, json.dumps({"published_before": value}).encode())


class EventPublisher:
    """A bounded queue of events between the DICOM threads and JetStream."""

    def __init__(self, watermarks: dict[str, Watermark], max_pending: int) -> None:
        self._watermarks = watermarks
        self._max_pending = max_pending
        self._queue: deque[InstanceStored] = deque()
        self._lock = threading.Lock()
        self._rescan_from: dict[str, float] = {}
        self._rescan_generation: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bus: Bus | None = None

    @property
    def connected(self) -> bool:
        return self.bus is not None and self.bus.connected

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def submit(self, event: InstanceStored) -> None:
        """Queue ``event`` (any thread). Past the bound, it is left to the archive rescan."""
        with self._lock:
            was_empty = not self._queue
            full = len(self._queue) >= self._max_pending
            if not full:
                self._queue.append(event)
        if full:
            self.require_rescan(event.site, event.received_at.timestamp())
            metrics.EVENTS_DEFERRED.inc()
        metrics.EVENT_BACKLOG.set(len(self._queue))
        if was_empty and self._loop is not None:  # waking the loop per event costs CPU
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def require_rescan(self, site: str, since: float) -> None:
        """Archive files of ``site`` modified since ``since`` may lack their event: rescan them."""
        with self._lock:
            self._rescan_from[site] = min(self._rescan_from.get(site, since), since)
            self._rescan_generation[site] = self._rescan_generation.get(site, 0) + 1

    def pending_rescans(self) -> dict[str, tuple[float, int]]:
        """``site -> (since, generation)`` of the rescans still owed."""
        with self._lock:
            return {s: (t, self._rescan_generation[s]) for s, t in self._rescan_from.items()}

    def rescan_done(self, site: str, generation: int) -> None:
        """Forget a rescan, unless another was required while it ran."""
        with self._lock:
            if self._rescan_generation.get(site) == generation:
                self._rescan_from.pop(site, None)

    def wait_for_room(self, stop: threading.Event) -> None:
        """Block a scanning thread while the queue is more than half full."""
        while len(self._queue) >= self._max_pending // 2 and not stop.is_set():
            time.sleep(0.05)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish queued events until ``stop``; then try once more to drain what is left."""
        last_mark = 0.0
        while not stop.is_set():
            if 0 < len(self._queue) < BATCH:
                await asyncio.sleep(LINGER_SECONDS)  # let a few more events join this batch
            published = await self._publish_batch()
            if time.monotonic() - last_mark > 2.0:
                self.save_watermarks()
                last_mark = time.monotonic()
            if not published:
                self._wakeup.clear()
                if not self._queue or not self.connected:
                    await _wait_any(stop, self._wakeup, seconds=0.5)
        await self._publish_batch()
        self.save_watermarks()

    async def _publish_batch(self) -> bool:
        """Publish up to one batch; False when there was nothing to do or NATS is away."""
        if self.bus is None or not self.connected or not self._queue:
            return False
        with self._lock:
            batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
        results = await self.bus.publish_many(list(batch))
        acked = {id(e) for e, ok in zip(batch, results, strict=True) if ok}
        with self._lock:
            # The batch is still at the head: only this coroutine removes from the queue.
            for _ in range(len(batch)):
                head = self._queue.popleft()
                if id(head) not in acked:
                    self._queue.append(head)  # retried after what is already queued
        metrics.EVENTS_PUBLISHED.labels("acked").inc(len(acked))
        if len(acked) < len(batch):
            metrics.EVENTS_PUBLISHED.labels("failed").inc(len(batch) - len(acked))
            await asyncio.sleep(0.5)
        metrics.EVENT_BACKLOG.set(len(self._queue))
        return bool(acked)

    def save_watermarks(self) -> None:
        now = time.time()
        with self._lock:
            oldest: dict[str, float] = dict(self._rescan_from)
            for event in self._queue:
                ts = event.received_at.timestamp()
                oldest[event.site] = min(oldest.get(event.site, now), ts)
        for site, mark in self._watermarks.items():
            try:
                mark.write(oldest.get(site, now) - WATERMARK_SLACK_SECONDS)
            except OSError as err:  # full disk: the old, lower watermark stays valid
                log.warning("could not save watermark", extra={"error": err.strerror})


async def _wait_any(stop: asyncio.Event, wakeup: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wakeup.wait())]
    await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
