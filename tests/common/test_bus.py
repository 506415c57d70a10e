"""The bus against a real nats-server: streams, deduplication, durable consumers, KV."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from fiona_common.bus import STREAMS, ConsumerSpec, connect
from fiona_common.errors import BadInput, Later
from fiona_common.messages import InstanceStored, partition_of
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
    garbage_subject = instance_stored("1.2.3.4.7").routed_subject  # same partition
    await bus.js.publish(garbage_subject, b'{"schema": 1, "garbage": true}')
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


async def test_a_partition_consumer_sees_whole_series_and_only_its_own(
    nats_server: NatsServer,
) -> None:
    bus = await connect(nats_server.url, "test")
    await bus.ensure_streams()
    events = [
        instance_stored(f"1.2.3.{series}.{n}").model_copy(update={"series_uid": f"1.2.3.{series}"})
        for series in range(40)
        for n in range(3)
    ]
    assert all(await bus.publish_many(list(events)))
    partition = partition_of("1.2.3.0", InstanceStored.partitions)
    mine = [e.sop_uid for e in events if partition_of(e.series_uid, 16) == partition]
    assert 3 <= len(mine) < len(events)  # 40 series do not all fall into one partition
    seen: list[str] = []
    stop = asyncio.Event()

    async def handler(event: InstanceStored) -> None:
        seen.append(event.sop_uid)
        if len(seen) == len(mine):
            stop.set()

    spec = ConsumerSpec(durable="test-partition", partition=partition)
    await asyncio.wait_for(bus.consume(InstanceStored, spec, handler, stop), 20)
    assert seen == mine
    assert events[0].routed_subject == f"fiona.instance.stored.{partition}"
    assert InstanceStored.subject_filter() == "fiona.instance.stored.>"
    # Documented in docs/events.md: integrators may compute it, so it must never change.
    assert partition_of("1.2.826.0.1.3680043.2.1125.1", 16) == 8
    await bus.nc.close()


async def test_slow_handling_within_ack_wait_is_not_redelivered(nats_server: NatsServer) -> None:
    # Regression: a consumer BackOff list replaced ack_wait by its first value (1 s), so every
    # batch that took longer than a second was delivered a second time while in hand.
    bus = await connect(nats_server.url, "test")
    await bus.ensure_streams()
    assert all(await bus.publish_many([instance_stored(f"1.2.3.4.{n}") for n in range(3)]))
    handled: list[str] = []
    stop = asyncio.Event()

    async def slow(events: list[InstanceStored]) -> list[BadInput | None]:
        await asyncio.sleep(1.5)
        handled.extend(e.sop_uid for e in events)
        if len(handled) >= 3:
            stop.set()
        return [None] * len(events)

    spec = ConsumerSpec(durable="test-slow", ack_wait_seconds=10)
    replicas = [bus.consume_batches(InstanceStored, spec, slow, stop) for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*replicas), 20)  # one is idle, asking for more
    await bus.nc.flush()
    info = await bus.js.consumer_info("FIONA_INSTANCES", "test-slow")
    assert sorted(handled) == ["1.2.3.4.0", "1.2.3.4.1", "1.2.3.4.2"]  # none twice
    assert info.delivered.consumer_seq == 3  # each delivered once
    await bus.nc.close()


async def test_a_batch_handed_back_later_comes_again_whole_and_in_order(
    nats_server: NatsServer,
) -> None:
    # Regression: batches were nak'd with a delay, and nats-server 2.9 redelivered such naks
    # late and split (one message of two stalled), so REDCap writes hung after an outage.
    bus = await connect(nats_server.url, "test")
    await bus.ensure_streams()
    uids = [f"1.2.3.5.{n}" for n in range(3)]
    assert all(await bus.publish_many([instance_stored(uid) for uid in uids]))
    batches: list[list[str]] = []
    stop = asyncio.Event()

    async def not_yet(events: list[InstanceStored]) -> list[BadInput | None]:
        batches.append([e.sop_uid for e in events])
        if len(batches) < 4:
            raise Later(0.3)
        stop.set()
        return [None] * len(events)

    # ack_wait shorter than the time held: "in progress" keeps the batch ours meanwhile.
    spec = ConsumerSpec(durable="test-later", ack_wait_seconds=0.6, max_deliver=-1)
    await asyncio.wait_for(bus.consume_batches(InstanceStored, spec, not_yet, stop), 20)
    await bus.nc.flush()
    info = await bus.js.consumer_info("FIONA_INSTANCES", "test-later")
    assert batches == [uids] * 4  # the whole batch each time, in stream order
    assert info.delivered.consumer_seq == 3 and info.num_ack_pending == 0  # never redelivered
    await bus.nc.close()


async def test_a_held_batch_is_handed_back_at_once_on_stop(nats_server: NatsServer) -> None:
    bus = await connect(nats_server.url, "test")
    await bus.ensure_streams()
    assert all(await bus.publish_many([instance_stored("1.2.3.6.1")]))
    stop = asyncio.Event()

    async def much_later(events: list[InstanceStored]) -> list[BadInput | None]:
        stop.set()
        raise Later(3600)

    spec = ConsumerSpec(durable="test-stop", ack_wait_seconds=60, max_deliver=-1)
    await asyncio.wait_for(bus.consume_batches(InstanceStored, spec, much_later, stop), 10)
    taken: list[str] = []
    again = asyncio.Event()

    async def take(events: list[InstanceStored]) -> list[BadInput | None]:
        taken.extend(e.sop_uid for e in events)
        again.set()
        return [None] * len(events)

    await asyncio.wait_for(bus.consume_batches(InstanceStored, spec, take, again), 10)
    assert taken == ["1.2.3.6.1"]  # not after the hour, nor after ack_wait
    await bus.nc.close()


async def test_a_short_later_of_a_single_message_consumer_is_held_not_redelivered(
    nats_server: NatsServer,
) -> None:
    # The exporter's retries: a delayed nak came back seconds late from nats-server 2.9.
    bus = await connect(nats_server.url, "test")
    await bus.ensure_streams()
    assert all(await bus.publish_many([instance_stored("1.2.3.7.1")]))
    tries: list[str] = []
    stop = asyncio.Event()

    async def not_yet(event: InstanceStored) -> None:
        tries.append(event.sop_uid)
        if len(tries) < 3:
            raise Later(0.4)
        stop.set()

    spec = ConsumerSpec(durable="test-hold", ack_wait_seconds=0.6, max_deliver=-1)
    consume = bus.consume(InstanceStored, spec, not_yet, stop, batch=1, hold_later_up_to=1.0)
    await asyncio.wait_for(consume, 20)
    await bus.nc.flush()
    info = await bus.js.consumer_info("FIONA_INSTANCES", "test-hold")
    assert tries == ["1.2.3.7.1"] * 3
    assert info.delivered.consumer_seq == 1 and info.num_ack_pending == 0  # delivered once

    # Longer than the hold: back to the server (an SFTP window of hours is not held here).
    assert all(await bus.publish_many([instance_stored("1.2.3.7.2")]))
    stop.clear()

    async def much_later(event: InstanceStored) -> None:
        stop.set()
        raise Later(3600)

    await asyncio.wait_for(
        bus.consume(InstanceStored, spec, much_later, stop, batch=1, hold_later_up_to=1.0), 10
    )
    await bus.nc.flush()
    info = await bus.js.consumer_info("FIONA_INSTANCES", "test-hold")
    assert info.num_ack_pending == 1 and info.num_redelivered == 0  # nak'd with the delay
    await bus.nc.close()


async def test_kv_bucket_is_created_on_first_use(nats_server: NatsServer) -> None:
    bus = await connect(nats_server.url, "test")
    kv = await bus.kv("fiona_test_state")
    await kv.put("a", b"1")
    again = await bus.kv("fiona_test_state")
    assert (await again.get("a")).value == b"1"
    await bus.nc.close()
