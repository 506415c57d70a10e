"""The ``fiona_expected`` bucket: counts a PACS announced, written by ``fiona pacs`` and followed
here (documented in docs/events.md, so other retrieve tools can write it too).

Every replica follows the whole bucket (a key-value watch, current values first) and applies
each document to the study's progress; applying one twice changes nothing. A document that
could not be applied because NATS was away is applied again on the next turn.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.errors import TimeoutError as NatsTimeout
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from fiona_common.bus import NATS_DOWN, Bus
from fiona_common.errors import BadInput, Unavailable
from fiona_common.logs import short_hash
from services.arrival.expected import ExpectedStudy

log = logging.getLogger(__name__)

EXPECTED_BUCKET = "fiona_expected"
KEEP_SECONDS = 14 * 24 * 3600  # as long as the arrival service keeps a study's progress


async def expected_bucket(bus: Bus) -> KeyValue:
    """The bucket, created on first use (by whichever of arrival and ``fiona pacs`` is first)."""
    return await bus.kv(EXPECTED_BUCKET, history=1, ttl_seconds=KEEP_SECONDS)


async def announce(kv: KeyValue, doc: ExpectedStudy) -> None:
    """Record (or replace) the counts announced for one study."""
    await kv.put(doc.key, doc.encode())


async def follow_expected(
    kv: KeyValue,
    apply: Callable[[ExpectedStudy], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    """Apply every document of the bucket, current ones first, until ``stop``."""
    watcher = await kv.watchall()
    pending: dict[str, ExpectedStudy] = {}
    try:
        while not stop.is_set():
            try:
                entry = await watcher.updates(timeout=1.0)  # type: ignore[no-untyped-call]
            except NatsTimeout:
                entry = None
            if entry is not None and entry.operation not in (KV_DEL, KV_PURGE) and entry.value:
                doc = _decode(entry.key, entry.value)
                if doc is not None:
                    pending[entry.key] = doc
            for key, doc in list(pending.items()):
                try:
                    await apply(doc)
                except (Unavailable, *NATS_DOWN) as err:
                    log.warning("announced counts not applied yet", extra={"error": str(err)})
                    break
                pending.pop(key, None)
    finally:
        try:
            await watcher.stop()  # type: ignore[no-untyped-call]
        except NATS_DOWN:
            pass


def _decode(key: str, value: bytes) -> ExpectedStudy | None:
    try:
        return ExpectedStudy.model_validate_json(value)
    except (ValidationError, BadInput) as err:
        log.warning(
            "unreadable document in fiona_expected ignored",
            extra={"key_hash": short_hash(key), "error": type(err).__name__},
        )
        return None
