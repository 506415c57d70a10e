"""Events decided together with a state change, published after it: the outbox pattern.

A service that changes a key-value entry and must announce it writes the events into the entry
itself (its ``outbox``) in the same compare-and-set. Whoever then publishes them (the writer,
or after a crash any replica) takes them out with a second compare-and-set. Deterministic
message ids make a second publish of the same event a no-op in JetStream.
"""

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from fiona_common.bus import Bus
from fiona_common.kvstate import cas_update
from fiona_common.messages import Event, event_types


class HasOutbox(Protocol):
    outbox: list[dict[str, Any]]

    def encode(self) -> bytes: ...


M = TypeVar("M", bound=HasOutbox)


def post(outbox: list[dict[str, Any]], event: Event) -> None:
    """Add ``event`` to an entry's outbox (inside the caller's compare-and-set)."""
    outbox.append(
        {"type": type(event).__name__, "event": event.model_dump(mode="json", by_alias=True)}
    )


def events_of(outbox: list[dict[str, Any]]) -> list[Event]:
    types = event_types()
    return [types[item["type"]].model_validate(item["event"]) for item in outbox]


async def flush(
    kv: KeyValue,
    key: str,
    bus: Bus,
    decode: Callable[[bytes], M],
    before_removal: Callable[[M], Any] | None = None,
) -> list[Event]:
    """Publish the entry's outbox, then take the published events out.

    Returns the events this call took out (so each is counted once, by one replica).
    ``before_removal`` runs after publishing, before the events leave the outbox: work that
    must happen at least once, such as removing files the events make obsolete.
    """
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return []
    state = decode(entry.value or b"{}")
    if not state.outbox:
        return []
    published = set()
    for event in events_of(state.outbox):
        await bus.publish(event)
        published.add(event.msg_id())
    if before_removal is not None:
        await before_removal(state)
    removed: list[Event] = []

    def step(current: bytes | None) -> bytes | None:
        if current is None:
            return None
        latest = decode(current)
        pairs = list(zip(events_of(latest.outbox), latest.outbox, strict=True))
        removed[:] = [e for e, _ in pairs if e.msg_id() in published]
        if not removed:
            return None
        latest.outbox = [item for e, item in pairs if e.msg_id() not in published]
        return latest.encode()

    return removed if await cas_update(kv, key, step) else []
