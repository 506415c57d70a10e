"""FIONA's events as a benchmark sees them: core NATS subscriptions, timed on reception.

The subscriptions run on an event loop of their own thread, so a benchmark's main thread can stay
synchronous (start senders, wait, read results). Subclasses name their ``SUBJECTS`` and record
what they need in :meth:`EventWatcher.on_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Coroutine
from typing import Any, Self

import nats


class EventWatcher(contextlib.AbstractContextManager["EventWatcher"]):
    SUBJECTS: tuple[str, ...] = ()

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._nc: Any = None

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._connect())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                self._call(self._nc.close(), 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self) -> None:
        # Unbounded pending buffers: a burst of thousands of events must not be dropped.
        self._nc = await nats.connect(
            self.url, connect_timeout=5, max_reconnect_attempts=-1, pending_size=2**26
        )
        for subject in self.SUBJECTS:
            await self._nc.subscribe(
                subject, cb=self._on_message, pending_msgs_limit=-1, pending_bytes_limit=-1
            )
        await self._nc.flush()

    async def _on_message(self, msg: Any) -> None:
        at = time.monotonic()
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        with self.lock:
            self.on_event(str(msg.subject), event, at)

    def on_event(self, subject: str, event: dict[str, Any], at: float) -> None:
        """Record one event (called with ``self.lock`` held)."""
        raise NotImplementedError
