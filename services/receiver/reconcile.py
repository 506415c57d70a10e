"""Finding archived objects whose "instance stored" event may never have gone out.

Runs at start-up (from the watermark the last run left) and whenever the event queue
overflowed during a long NATS outage. Cheap on a large archive: only study folders modified
since the watermark are listed, and only files modified since then are read (header only).
"""

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from fiona_common.errors import BadInput
from fiona_common.layout import Layout
from fiona_common.messages import InstanceStored, StoredVia
from services.receiver.archive import read_identity
from services.receiver.ingest import Origin, stored_event
from services.receiver.publisher import EventPublisher

log = logging.getLogger(__name__)


def origin_of(path: Path) -> Origin:
    """Who sent an archived object, as its file meta recorded it (empty for files that came
    another way, e.g. the inbox); the event says "reconcile"."""
    try:
        meta = read_file_meta_info(path)
    except (OSError, InvalidDicomError, ValueError, EOFError):
        meta = FileMetaDataset()
    return Origin(
        calling_aet=str(meta.get("SourceApplicationEntityTitle") or "").strip(),
        called_aet=str(meta.get("ReceivingApplicationEntityTitle") or "").strip(),
        peer_address="",
        via=StoredVia.RECONCILE,
    )


def archived_since(layout: Layout, since: float) -> Iterator[Path]:
    """Archive files whose modification time is at or after ``since`` (epoch seconds)."""
    try:
        studies = list(os.scandir(layout.archive_dir))
    except FileNotFoundError:
        return
    for study in studies:
        if not study.name.startswith("scp_") or study.stat().st_mtime < since:
            continue
        for entry in os.scandir(study.path):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime >= since:
                yield Path(entry.path)


def rescan(
    site: str,
    layout: Layout,
    since: float,
    submit: Callable[[InstanceStored], None],
    wait_for_room: Callable[[], None],
    stop: threading.Event,
) -> int:
    """Submit an event for every object archived since ``since``; returns how many."""
    count = 0
    for path in archived_since(layout, since):
        if stop.is_set():
            break
        try:
            identity = read_identity(path)
        except BadInput as err:
            log.error("unreadable object in archive", extra={"reason": err.code})
            continue
        wait_for_room()
        stat = path.stat()
        received_at = datetime.fromtimestamp(stat.st_mtime, UTC)
        relative = layout.relative(path)
        origin = origin_of(path)
        submit(stored_event(identity, site, relative, stat.st_size, origin, received_at))
        count += 1
    return count


async def reconcile_forever(
    layouts: dict[str, Layout],
    publisher: EventPublisher,
    stop: asyncio.Event,
    thread_stop: threading.Event,
) -> None:
    """Run the rescans the publisher owes (start-up, queue overflow) while NATS is reachable."""
    while not stop.is_set():
        if publisher.connected:
            for site, (since, generation) in publisher.pending_rescans().items():
                count = await asyncio.to_thread(
                    rescan,
                    site,
                    layouts[site],
                    since,
                    publisher.submit,
                    lambda: publisher.wait_for_room(thread_stop),
                    thread_stop,
                )
                if not thread_stop.is_set():
                    publisher.rescan_done(site, generation)
                log.info("archive rescanned", extra={"site": site, "events": count})
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
