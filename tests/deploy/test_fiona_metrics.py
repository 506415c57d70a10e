"""FIONA's own metrics that the NATS alert and the consumer-lag rules and panels rely on, against a
real nats-server: ``fiona_nats_connected`` follows a service's bus connection (0 while waiting,
1 when up, 0 when lost, 1 when back) and ``fiona_consumer_pending`` a durable's backlog."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable

from nats.js.api import ConsumerConfig
from prometheus_client import REGISTRY

from fiona_common.bus import connect_when_available
from fiona_common.lag import pending_now, report_pending
from fiona_common.messages import StudyComplete
from tests.integration.studies import complete
from tests.peers import NatsServer, free_port


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_nats_connected_is_zero_while_waiting_for_nats() -> None:
    client = f"test-{secrets.token_hex(4)}"
    waiting = asyncio.create_task(
        connect_when_available(f"nats://127.0.0.1:{free_port()}", client, asyncio.Event())
    )
    await eventually(lambda: sample("fiona_nats_connected", client=client) == 0, "0 at start")
    await asyncio.sleep(1.5)  # a failed attempt or two later: still 0
    assert not waiting.done() and sample("fiona_nats_connected", client=client) == 0
    # nats-py itself keeps trying to connect (max_reconnect_attempts=-1): only a cancel ends it.
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting


async def test_nats_connected_follows_a_lost_and_restored_connection(
    nats_server: NatsServer,
) -> None:
    client = f"test-{secrets.token_hex(4)}"
    bus = await connect_when_available(nats_server.url, client, asyncio.Event())
    assert bus is not None
    try:
        assert sample("fiona_nats_connected", client=client) == 1
        nats_server.stop()
        await eventually(lambda: sample("fiona_nats_connected", client=client) == 0, "lost")
        nats_server.start()
        await eventually(lambda: sample("fiona_nats_connected", client=client) == 1, "back")
    finally:
        await bus.close()
    assert sample("fiona_nats_connected", client=client) == 0


async def test_consumer_pending_is_the_durables_backlog(nats_server: NatsServer) -> None:
    durable = f"test-{secrets.token_hex(4)}"
    stop = asyncio.Event()
    bus = await connect_when_available(nats_server.url, "test", stop)
    assert bus is not None
    try:
        config = ConsumerConfig(durable_name=durable, filter_subject=StudyComplete.subject_filter())
        await bus.js.add_consumer(StudyComplete.stream, config)
        for study in ("1.2.3.1", "1.2.3.2", "1.2.3.3"):
            await bus.publish(complete(study))
        assert await pending_now(bus, [(StudyComplete, durable), (StudyComplete, "absent")]) == {
            durable: 3
        }
        assert sample("fiona_consumer_pending", consumer=durable) == 3
        assert sample("fiona_consumer_pending", consumer="absent") is None
        rounds: list[dict[str, int]] = []
        reporter = asyncio.create_task(
            report_pending(bus, [(StudyComplete, durable)], stop, 0.1, rounds.append)
        )
        await eventually(lambda: len(rounds) >= 2, "two rounds")
        stop.set()
        await reporter
        assert rounds[-1] == {durable: 3}
    finally:
        await bus.close()
