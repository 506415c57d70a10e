"""The event queue between DICOM threads and JetStream, with a fake bus."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fiona_common.messages import Event, InstanceStored
from services.receiver.publisher import WATERMARK_SLACK_SECONDS, EventPublisher, Watermark
from tests.builders import instance_stored


class FakeBus:
    """Acknowledges what it is given, or nothing while ``connected`` is False."""

    def __init__(self) -> None:
        self.connected = True
        self.published: list[str] = []

    async def publish_many(self, events: list[Event]) -> list[bool]:
        if not self.connected:
            return [False] * len(events)
        self.published += [e.msg_id() for e in events]
        return [True] * len(events)


def event(n: int, at: datetime) -> InstanceStored:
    return instance_stored(f"1.2.3.{n}", received_at=at)


def publisher(tmp_path: Path, max_pending: int = 100) -> tuple[EventPublisher, Watermark]:
    mark = Watermark(tmp_path / "mark.json")
    return EventPublisher({"default": mark}, max_pending), mark


async def drain(pub: EventPublisher) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(stop))
    for _ in range(100):
        if pub.backlog == 0:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task


async def test_events_wait_while_nats_is_away_and_go_out_once_it_is_back(tmp_path: Path) -> None:
    pub, _ = publisher(tmp_path)
    bus = FakeBus()
    bus.connected = False
    pub.bus = bus  # type: ignore[assignment]
    now = datetime.now(UTC)
    for n in range(5):
        pub.submit(event(n, now))
    await pub._publish_batch()
    assert pub.backlog == 5 and bus.published == []
    bus.connected = True
    await drain(pub)
    assert len(bus.published) == 5 and pub.backlog == 0


async def test_watermark_stays_before_the_oldest_unpublished_event(tmp_path: Path) -> None:
    pub, mark = publisher(tmp_path)
    old = datetime.now(UTC) - timedelta(hours=1)
    pub.submit(event(1, old))
    pub.save_watermarks()
    assert mark.read() == old.timestamp() - WATERMARK_SLACK_SECONDS
    pub.bus = FakeBus()  # type: ignore[assignment]
    await drain(pub)
    assert mark.read() > old.timestamp() + 3000  # nothing pending: close to now


async def test_overflow_asks_for_a_rescan_instead_of_growing(tmp_path: Path) -> None:
    pub, mark = publisher(tmp_path, max_pending=100)
    at = datetime.now(UTC) - timedelta(minutes=5)
    for n in range(150):
        pub.submit(event(n, at + timedelta(seconds=n)))
    assert pub.backlog == 100
    [(since, generation)] = pub.pending_rescans().values()
    assert since == (at + timedelta(seconds=100)).timestamp()
    pub.save_watermarks()
    assert mark.read() <= at.timestamp()
    pub.require_rescan("default", since)  # a second overflow while the first rescan runs
    pub.rescan_done("default", generation)
    assert pub.pending_rescans()  # not forgotten: a newer rescan was asked for


def test_unreadable_watermark_means_rescan_everything(tmp_path: Path) -> None:
    (tmp_path / "mark.json").write_text("{broken")
    assert Watermark(tmp_path / "mark.json").read() == 0.0
    Watermark(tmp_path / "mark.json").write(12.5)
    assert json.loads((tmp_path / "mark.json").read_text()) == {"published_before": 12.5}
