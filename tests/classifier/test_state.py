"""Compare-and-set of series state against a real nats-server, with concurrent writers."""

from __future__ import annotations

import asyncio

from fiona_common.bus import connect
from services.classifier.state import SeriesState, advance
from tests.peers import NatsServer


async def test_concurrent_updates_never_lose_one(nats_server: NatsServer) -> None:
    buses = [await connect(nats_server.url, f"w{n}") for n in range(3)]
    kvs = [await bus.kv("fiona_test_series") for bus in buses]
    seen: set[int] = set()

    def add(n: int):  # each writer adds its own instance number
        def step(state: SeriesState | None) -> SeriesState:
            members = set((state or SeriesState()).summary.get("members", []))
            return SeriesState({"members": sorted(members | {n})})

        return step

    await asyncio.gather(*(advance(kvs[n % 3], "s", add(n)) for n in range(30)))
    entry = await kvs[0].get("s")
    seen = set(SeriesState.decode(entry.value or b"{}").summary["members"])
    assert seen == set(range(30))
    assert await advance(kvs[1], "s", add(5)) is None  # no change: nothing written
    for bus in buses:
        await bus.close()
