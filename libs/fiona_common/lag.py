"""Consumer lag as FIONA sees it: ``fiona_consumer_pending{consumer}`` for durable consumers.

A service runs :func:`report_pending` beside its consumers; every ``every`` seconds it asks
JetStream for each durable's backlog (:meth:`Bus.backlog`: pending + in flight) and sets the
gauge, labelled with the durable's name (a small, fixed set: no identifiers). Every replica of a
service reports the same figures, so dashboards and rules take the max per consumer. A durable
not created yet, or NATS away, leaves that consumer's last value until the next round.
"""

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from fiona_common.bus import NATS_DOWN, Bus
from fiona_common.messages import Event
from fiona_common.metrics import CONSUMER_PENDING

# (event type the consumer reads, durable name)
Durable = tuple[type[Event], str]


async def pending_now(bus: Bus, durables: Sequence[Durable]) -> dict[str, int]:
    """Each durable's backlog, set on the gauge; durables JetStream did not answer for are
    left out (not created yet, NATS away)."""
    found = {}
    for event_type, durable in durables:
        with contextlib.suppress(*NATS_DOWN):
            found[durable] = await bus.backlog(event_type, durable)
            CONSUMER_PENDING.labels(durable).set(found[durable])
    return found


async def report_pending(
    bus: Bus,
    durables: Sequence[Durable],
    stop: asyncio.Event,
    every: float = 5.0,
    then: Callable[[dict[str, int]], None] | None = None,
) -> None:
    """Until ``stop``: the durables' backlogs on ``fiona_consumer_pending`` every ``every``
    seconds, each round's figures also handed to ``then`` (e.g. for ``fiona status``)."""
    while not stop.is_set():
        found = await pending_now(bus, durables)
        if then is not None:
            then(found)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
