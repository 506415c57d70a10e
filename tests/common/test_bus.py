"""The bus against a real nats-server: streams, deduplication, durable consumers, KV."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from fiona_common.bus import STREAMS, ConsumerSpec, connect
from fiona_common.errors import BadInput
from fiona_common.messages import InstanceStored
from tests.builders import instance_stored
from tests.peers import NatsServer


async def test_streams_are_created_idempotently(nats_server: NatsServer) -> None:
    bus = await connect(nats_server.url, "test")
    await bus.ensure_streams()
    await bus.ensure_streams()
    info = await bus.js.stream_info(STREAMS[0].name)
    assert info.config.subjects == ["fiona.instance.>"]
    await bus.nc.close()


async def test_same_event_published_twice_is_stored_once(nats_server: NatsServer) -> None:
    bus = await connect(nats_server.url, "test")
    await bus.ensure_streams()
    first = await bus.publish(instance_stored("1.2.3.4.5"))
    again = await bus.publish(instance_stored("1.2.3.4.5"))
    assert not first.duplicate and again.duplicate
    assert await bus.publish_many([instance_stored("1.2.3.4.6"), instance_stored("1.2.3.4.5")]) == [
        True,
        True,
    ]
    assert (await bus.js.stream_info("FIONA_INSTANCES")).state.messages == 2
    await bus.nc.close()


async def test_consumer_acks_good_messages_and_terminates_bad_ones(
    nats_server: NatsServer,
) -> None:
    bus = await connect(nats_server.url, "test")
    await bus.ensure_streams()
    await bus.publish(instance_stored("1.2.3.4.7"))
    await bus.js.publish("fiona.instance.stored", b'{"schema": 1, "garbage": true}')
    await bus.publish(instance_stored("1.2.3.4.8"))
    seen: list[str] = []
    refused: list[str] = []
    stop = asyncio.Event()

    async def handler(event: InstanceStored) -> None:
        seen.append(event.sop_uid)
        if len(seen) == 2:
            stop.set()

    async def on_bad(event: InstanceStored | None, err: BadInput, msg: Msg) -> None:
        refused.append(err.code)

    spec = ConsumerSpec(durable="test-consumer")
    await asyncio.wait_for(bus.consume(InstanceStored, spec, handler, stop, on_bad), 20)
    assert seen == ["1.2.3.4.7", "1.2.3.4.8"]
    assert refused == ["malformed_event"]
    for _ in range(100):  # acks are asynchronous: give the server a moment to count them
        info = await bus.js.consumer_info("FIONA_INSTANCES", "test-consumer")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert info.num_pending == 0 and info.num_ack_pending == 0
    await bus.nc.close()


async def test_kv_bucket_is_created_on_first_use(nats_server: NatsServer) -> None:
    bus = await connect(nats_server.url, "test")
    kv = await bus.kv("fiona_test_state")
    await kv.put("a", b"1")
    again = await bus.kv("fiona_test_state")
    assert (await again.get("a")).value == b"1"
    await bus.nc.close()
