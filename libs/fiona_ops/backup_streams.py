"""JetStream state in a backup: every stream's messages and every key-value bucket's entries.

nats-py has no client for the server's snapshot API (``$JS.API.STREAM.SNAPSHOT``, a tar of the
server's own store format), so the state is copied as messages through nats-py's JetStream
API, which also works across server versions:

- a key-value bucket (stream ``KV_<bucket>``): its current entries (one per key, deleted keys
  left out), read through an ephemeral consumer delivering the last message per subject;
- any other stream: every message up to the last sequence it had when its read began, in
  order, with subject and headers (``Nats-Msg-Id`` included);
- each stream's configuration, so that restore recreates streams and buckets exactly.

Restore publishes the messages again in their order with their subjects and headers (minus
the ``Nats-Expected-*`` preconditions of the original publish) into freshly created streams
whose numbering starts after the highest sequence the original had when the backup ended:
key-value revisions go on growing, so a revision kept anywhere (a series summary's
FionaRevision, the arrival index) is never mistaken for a newer one. Consumers are not
restored: every FIONA consumer is idempotent and reads its stream again from the start.
"""

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError
from pydantic import BaseModel

from fiona_common.errors import FionaError, Unavailable
from fiona_common.nats_auth import NatsTarget, as_target, refused

KV_PREFIX = "KV_"
_FETCH = 256
_WINDOW = 512  # restore: publishes in flight before their acknowledgements are awaited
_DELETED = {"DEL", "PURGE"}  # KV-Operation of a deleted key
# NATS failing mid-way (not bus.NATS_DOWN: its OSError would hide a full backup disk).
_NATS_FAILED = (NatsError, APIError, TimeoutError, ConnectionError)


class StreamRecord(BaseModel):
    """One stream of the backup (a key-value bucket's stream too), as the manifest lists it."""

    name: str
    bucket: bool  # a key-value bucket: current entries only
    config_file: str
    messages_file: str
    messages: int
    resume_seq: int = 1  # restored messages are numbered from here on


async def _connect(target: NatsTarget | str) -> NatsClient:
    target = as_target(target)

    async def quiet(_err: Exception) -> None:
        pass

    try:
        return await nats.connect(
            name="fiona-backup",
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
            **target.connect_options(),
        )
    except (*_NATS_FAILED, OSError) as err:
        raise refused(target, err) or Unavailable(
            f"NATS at {target} is not reachable: {type(err).__name__}"
        ) from None


async def dump(url: NatsTarget | str, folder: Path) -> list[StreamRecord]:
    """Write every stream and bucket under ``folder``; buckets first (see the module doc)."""
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        (folder / "jetstream").mkdir(mode=0o700, exist_ok=True)
        infos = await js.streams_info()
        buckets = sorted((i for i in infos if _name(i).startswith(KV_PREFIX)), key=_name)
        others = sorted((i for i in infos if not _name(i).startswith(KV_PREFIX)), key=_name)
        return [await _dump_stream(js, info, folder) for info in [*buckets, *others]]
    except _NATS_FAILED as err:
        raise Unavailable(f"NATS failed during the backup: {type(err).__name__}") from None
    finally:
        await nc.close()


async def next_sequences(url: NatsTarget | str) -> dict[str, int]:
    """Per stream, the sequence after its last message now (when the backup is complete)."""
    nc = await _connect(url)
    try:
        infos = await nc.jetstream().streams_info()
    except _NATS_FAILED as err:
        raise Unavailable(f"NATS failed during the backup: {type(err).__name__}") from None
    finally:
        await nc.close()
    return {_name(info): info.state.last_seq + 1 for info in infos}


def _name(info: StreamInfo) -> str:
    return str(info.config.name)


async def _dump_stream(js: JetStreamContext, listed: StreamInfo, folder: Path) -> StreamRecord:
    name = _name(listed)
    info = await js.stream_info(name)  # now, not when the streams were listed: see the docs
    bucket = name.startswith(KV_PREFIX)
    record = StreamRecord(
        name=name,
        bucket=bucket,
        config_file=f"jetstream/{name}.config.json",
        messages_file=f"jetstream/{name}.jsonl.gz",
        messages=0,
        resume_seq=info.state.last_seq + 1,
    )
    (folder / record.config_file).write_text(json.dumps(info.config.as_dict(), indent=2))
    with gzip.open(folder / record.messages_file, "wt", encoding="ascii") as out:
        async for msg in _read(js, info, bucket):
            record.resume_seq = max(record.resume_seq, msg.metadata.sequence.stream + 1)
            if bucket and (msg.headers or {}).get("KV-Operation") in _DELETED:
                continue
            out.write(json.dumps(_encode(msg), separators=(",", ":")) + "\n")
            record.messages += 1
    return record


def _encode(msg: Msg) -> dict[str, Any]:
    line: dict[str, Any] = {
        "seq": msg.metadata.sequence.stream,
        "subject": msg.subject,
        "time": msg.metadata.timestamp.astimezone(UTC).isoformat(),
        "data": base64.b64encode(msg.data).decode(),
    }
    if msg.headers:
        line["headers"] = dict(msg.headers)
    return line


async def _read(js: JetStreamContext, info: StreamInfo, bucket: bool) -> AsyncIterator[Msg]:
    """A stream's messages in order: a bucket's last per key, else all up to its last now."""
    if info.state.messages == 0:
        return
    subjects = info.config.subjects or []
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT if bucket else DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        filter_subject=subjects[0] if bucket and len(subjects) == 1 else None,
        inactive_threshold=60.0,
        mem_storage=True,
    )
    stream = _name(info)
    consumer = await js.add_consumer(stream, config)
    name = str(consumer.name)
    sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
    # A bucket: the entries current when the consumer was made (an entry that expires
    # meanwhile is simply not delivered). A stream: up to its last message when the read
    # began (later ones belong to the next backup).
    remaining = consumer.num_pending or 0
    last_seq = info.state.last_seq
    try:
        while remaining > 0:
            msgs = await _fetch(js, sub, stream, name, min(_FETCH, remaining))
            if not msgs:
                return
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if not bucket and seq > last_seq:
                    return
                yield msg
                pending = msg.metadata.num_pending
                remaining = min(remaining - 1, pending) if bucket else pending
                if remaining <= 0 or (not bucket and seq == last_seq):
                    return
    finally:
        await sub.unsubscribe()
        try:
            await js.delete_consumer(stream, name)
        except NotFoundError:
            pass


async def _fetch(
    js: JetStreamContext, sub: JetStreamContext.PullSubscription, stream: str, name: str, n: int
) -> list[Msg]:
    """Up to ``n`` messages; none when the consumer has nothing left (messages expired)."""
    for _ in range(3):
        try:
            return await sub.fetch(n, timeout=5)
        except TimeoutError:
            info = await js.consumer_info(stream, name)
            if not info.num_pending:
                return []
    raise Unavailable(f"reading stream {stream} stalled")


class StoredMessage(BaseModel):
    subject: str
    data: bytes
    headers: dict[str, str] | None


def read_dump(path: Path) -> Iterator[StoredMessage]:
    """The messages of one dump file, in order, ready to publish again."""
    with gzip.open(path, "rt", encoding="ascii") as lines:
        for line in lines:
            item = json.loads(line)
            headers = {
                k: v
                for k, v in (item.get("headers") or {}).items()
                if not k.startswith("Nats-Expected-")  # the original publish's preconditions
            }
            yield StoredMessage(
                subject=item["subject"],
                data=base64.b64decode(item["data"]),
                headers=headers or None,
            )


async def occupied(url: NatsTarget | str, records: list[StreamRecord]) -> list[str]:
    """Why NATS is not an empty target for these streams (empty list: it is)."""
    nc = await _connect(url)
    problems = []
    try:
        js = nc.jetstream()
        for record in records:
            try:
                info = await js.stream_info(record.name)
            except NotFoundError:
                continue
            if info.state.messages:
                problems.append(f"stream {record.name} holds {info.state.messages} messages")
            elif info.state.consumer_count:
                problems.append(f"stream {record.name} has consumers (are services running?)")
    finally:
        await nc.close()
    return problems


async def load(
    url: NatsTarget | str, backup: Path, records: list[StreamRecord]
) -> dict[str, tuple[int, int]]:
    """Recreate each stream and publish its messages again; per stream (stored, dropped)."""
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        done = {}
        for record in records:
            saved = json.loads((backup / record.config_file).read_text())
            config = StreamConfig.from_response(saved)
            try:
                await js.delete_stream(record.name)
            except NotFoundError:
                pass
            await js.add_stream(config)
            if record.resume_seq > 1:
                await js.purge_stream(record.name, seq=record.resume_seq)
            done[record.name] = await _publish_all(nc, read_dump(backup / record.messages_file))
        return done
    except _NATS_FAILED as err:
        raise Unavailable(f"NATS failed during the restore: {type(err).__name__}") from None
    finally:
        await nc.close()


async def _publish_all(nc: NatsClient, messages: Iterator[StoredMessage]) -> tuple[int, int]:
    """Publish in order, a window at a time; (stored, dropped as duplicates by JetStream).

    Each message is its own JetStream publish; they are written one after the other on one
    connection (so the stream keeps their order) and acknowledged on one reply subscription.
    """
    loop = asyncio.get_running_loop()
    inbox = nc.new_inbox()
    waiting: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(msg: Msg) -> None:
        future = waiting.pop(msg.subject.rsplit(".", 1)[1], None)
        if future is not None and not future.done():
            future.set_result(msg.data)

    sub = await nc.subscribe(f"{inbox}.*", cb=on_reply)
    stored = dropped = sent = 0
    try:
        batch: list[asyncio.Future[bytes]] = []
        for message in messages:
            sent += 1
            batch.append(waiting.setdefault(str(sent), loop.create_future()))
            await nc.publish(
                message.subject, message.data, reply=f"{inbox}.{sent}", headers=message.headers
            )
            if len(batch) >= _WINDOW:
                stored, dropped = _count(await _acks(nc, batch), stored, dropped)
                batch = []
        stored, dropped = _count(await _acks(nc, batch), stored, dropped)
    finally:
        await sub.unsubscribe()
    return stored, dropped


async def _acks(nc: NatsClient, futures: list[asyncio.Future[bytes]]) -> list[bytes]:
    if not futures:
        return []
    await nc.flush()
    try:
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout=30))
    except TimeoutError:
        raise Unavailable("JetStream did not acknowledge the restored messages") from None


def _count(replies: list[bytes], stored: int, dropped: int) -> tuple[int, int]:
    for reply in replies:
        try:
            ack = json.loads(reply)
        except ValueError:
            ack = {}
        if not isinstance(ack, dict) or "error" in ack or "seq" not in ack:
            raise FionaError(f"JetStream refused a restored message: {reply[:200]!r}")
        if ack.get("duplicate"):
            dropped += 1
        else:
            stored += 1
    return stored, dropped
