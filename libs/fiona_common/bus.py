"""NATS and JetStream: connect, declare streams/consumers/buckets idempotently, publish, consume.

Streams and key-value buckets are declared here, in one place, so every service ensures the
same definitions at start-up, whichever starts first.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, KeyValueConfig, PubAck, StreamConfig
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from fiona_common.errors import BadInput, ConfigError, Later, Unavailable
from fiona_common.messages import Event
from fiona_common.nats_auth import NatsTarget, as_target, refused

if TYPE_CHECKING:
    from prometheus_client import Gauge

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

# Errors that mean "NATS is not there right now"; callers retry on these.
NATS_DOWN = (NatsError, APIError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream FIONA relies on."""

    name: str
    subjects: list[str]
    max_age_seconds: float = 14 * 24 * 3600
    # Re-publishes of the same Nats-Msg-Id inside this window are dropped by the server;
    # beyond it, consumers deduplicate themselves.
    duplicate_window_seconds: float = 600

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=self.subjects,
            max_age=self.max_age_seconds,
            duplicate_window=self.duplicate_window_seconds,
        )


STREAMS: list[StreamSpec] = [
    StreamSpec(name="FIONA_INSTANCES", subjects=["fiona.instance.>"]),
    StreamSpec(name="FIONA_SERIES", subjects=["fiona.series.>"]),
    StreamSpec(name="FIONA_STUDIES", subjects=["fiona.study.>"]),
    StreamSpec(name="FIONA_TRANSFERS", subjects=["fiona.transfer.>"]),
]


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer; retry policy lives here, not in handlers."""

    durable: str
    # For partitioned events: the one partition this consumer reads (None: all of them).
    partition: int | None = None
    ack_wait_seconds: float = 60
    max_deliver: int = 10
    # Redelivery delays after unacknowledged deliveries. None: ack_wait each time. When set,
    # the server uses backoff[0] instead of ack_wait for the first delivery too, so a first
    # value shorter than the work takes redelivers messages that are still being handled.
    backoff_seconds: list[float] | None = None
    max_ack_pending: int = 1000


@dataclass
class Bus:
    """A NATS connection with its JetStream context."""

    nc: NatsClient
    js: JetStreamContext
    _acks: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    _ack_seq: int = 0
    _ack_prefix: str | None = None

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def ensure_streams(self, specs: list[StreamSpec] = STREAMS) -> None:
        """Create the streams, or bring their configuration up to date (idempotent)."""
        for spec in specs:
            try:
                await self.js.stream_info(spec.name)
            except NotFoundError:
                await self.js.add_stream(spec.config())
            else:
                await self.js.update_stream(spec.config())

    async def kv(self, bucket: str, history: int = 1, ttl_seconds: float | None = None) -> KeyValue:
        """The key-value bucket ``bucket``, created on first use."""
        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            config = KeyValueConfig(bucket=bucket, history=history, ttl=ttl_seconds)
            return await self.js.create_key_value(config)

    async def publish(self, event: Event, ack_seconds: float = 5.0) -> PubAck:
        """Publish ``event`` to JetStream and wait for the server's acknowledgement."""
        return await self.js.publish(
            event.routed_subject,
            event.to_json(),
            timeout=ack_seconds,
            stream=event.stream,
            headers={"Nats-Msg-Id": event.msg_id()},
        )

    async def publish_many(self, events: list[Event], ack_seconds: float = 10.0) -> list[bool]:
        """Publish a batch to JetStream; True for each event the server acknowledged.

        Every event is its own JetStream publish request, but all are written before any
        acknowledgement is awaited, and the acknowledgements come back on one long-lived
        subscription: nats-py's ``publish_async`` costs a task, a socket write and several
        futures per event, which the receiver's benchmark showed as a fifth of its CPU.
        """
        loop = asyncio.get_running_loop()
        waiting: list[tuple[str, asyncio.Future[bool]]] = []
        try:
            inbox = await self._ack_inbox()
            for event in events:
                self._ack_seq += 1
                token = str(self._ack_seq)
                self._acks[token] = loop.create_future()
                waiting.append((token, self._acks[token]))
                headers = {"Nats-Msg-Id": event.msg_id(), "Nats-Expected-Stream": event.stream}
                await self.nc.publish(
                    event.routed_subject, event.to_json(), reply=f"{inbox}.{token}", headers=headers
                )
            await asyncio.wait([future for _, future in waiting], timeout=ack_seconds)
        except NATS_DOWN:
            pass  # what was not acknowledged is published again later
        finally:
            for token, _ in waiting:
                self._acks.pop(token, None)
        results = [f.done() and not f.cancelled() and f.result() for _, f in waiting]
        return results + [False] * (len(events) - len(results))

    async def _ack_inbox(self) -> str:
        """The subject prefix of this connection's publish acknowledgements."""
        if self._ack_prefix is None:
            prefix = self.nc.new_inbox()

            async def on_ack(msg: Msg) -> None:
                future = self._acks.get(msg.subject.rsplit(".", 1)[1])
                if future is not None and not future.done():
                    future.set_result(_is_ack(msg.data))

            await self.nc.subscribe(f"{prefix}.*", cb=on_ack)
            self._ack_prefix = prefix
        return self._ack_prefix

    async def backlog(self, event_type: type[Event], durable: str) -> int:
        """Messages a durable consumer has not yet acknowledged (pending + in flight)."""
        info = await self.js.consumer_info(event_type.stream, durable)
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def close(self) -> None:
        """Send what is buffered (acks, publishes), then close.

        Not ``drain()``: with a pull subscription open it waits out its whole drain timeout
        (30 s), longer than a container's stop grace period.
        """
        with contextlib.suppress(*NATS_DOWN):
            await self.nc.flush(timeout=2)
        await self.nc.close()

    async def consume(
        self,
        event_type: type[E],
        spec: ConsumerSpec,
        handler: Callable[[E], Awaitable[None]],
        stop: asyncio.Event,
        on_bad_input: Callable[[E | None, BadInput, Msg], Awaitable[None]] | None = None,
        batch: int = 16,
        hold_later_up_to: float = 0.0,
    ) -> None:
        """Run ``handler`` for each message of ``event_type`` until ``stop`` is set.

        The handler gets a validated model and never acks: success acks, :class:`BadInput`
        terminates the message (after ``on_bad_input``, which quarantines), anything else is
        retried after a delay (a nak). Several replicas with the same durable name share
        the work. :class:`Later` of at most ``hold_later_up_to`` seconds keeps the message
        here ("in progress") and runs the handler again after the delay, instead of a delayed
        nak, which Debian's nats-server 2.9 redelivers seconds late; only for consumers whose
        other messages may wait meanwhile (``batch=1``).
        """
        if hold_later_up_to and batch != 1:
            raise ValueError("hold_later_up_to holds the whole fetch: use it with batch=1")

        async def settle_each(msgs: list[Msg]) -> None:
            for msg in msgs:
                # A long handler keeps its message: "in progress" before ack_wait runs out, so
                # only a dead consumer's messages go to another replica (after ack_wait).
                alive = asyncio.create_task(_keep_in_progress(msg, spec.ack_wait_seconds / 3))
                try:
                    hold = await _settle(msg, event_type, handler, on_bad_input, hold_later_up_to)
                    while hold is not None:  # a short Later: kept in progress by ``alive``
                        if not await _wait_unless_stopped(hold, stop):
                            await msg.nak()  # stopping: whoever runs next takes it at once
                            break
                        hold = await _settle(
                            msg, event_type, handler, on_bad_input, hold_later_up_to
                        )
                finally:
                    alive.cancel()

        await self._fetch_loop(event_type, spec, stop, batch, settle_each)

    async def consume_batches(
        self,
        event_type: type[E],
        spec: ConsumerSpec,
        handler: Callable[[list[E]], Awaitable[list[BadInput | None]]],
        stop: asyncio.Event,
        batch: int = 64,
    ) -> None:
        """Like :meth:`consume`, for handlers that gain from seeing several events at once.

        The handler returns, per event, None (done: acked) or the :class:`BadInput` that event
        is refused for (terminated). :class:`Later` holds the batch (kept "in progress") and
        runs it again after the delay; any other exception hands it back for a retry in 5 s.
        """

        async def settle_batch(msgs: list[Msg]) -> None:
            decoded = [_decode(msg, event_type) for msg in msgs]
            good = [
                (msg, event)
                for msg, event in zip(msgs, decoded, strict=True)
                if not isinstance(event, BadInput)
            ]
            for msg, event in zip(msgs, decoded, strict=True):
                if isinstance(event, BadInput):
                    await _refuse(msg, event)
            outcomes = await _run_batch(handler, good, spec, stop)
            if outcomes is None:
                return
            for (msg, _), outcome in zip(good, outcomes, strict=True):
                await (_refuse(msg, outcome) if outcome is not None else msg.ack())

        await self._fetch_loop(event_type, spec, stop, batch, settle_batch)

    async def _fetch_loop(
        self,
        event_type: type[E],
        spec: ConsumerSpec,
        stop: asyncio.Event,
        batch: int,
        settle: Callable[[list[Msg]], Awaitable[None]],
    ) -> None:
        stream = next(s for s in STREAMS if _matches(s.subjects, event_type.subject))
        subject = event_type.subject_filter(spec.partition)
        sub = await self.js.pull_subscribe(
            subject,
            durable=spec.durable,
            stream=stream.name,
            config=ConsumerConfig(
                durable_name=spec.durable,
                ack_wait=spec.ack_wait_seconds,
                max_deliver=spec.max_deliver,
                backoff=spec.backoff_seconds,
                max_ack_pending=spec.max_ack_pending,
                filter_subject=subject,
            ),
        )
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except TimeoutError:
                continue
            except NATS_DOWN as err:
                log.warning("fetch failed, retrying", extra={"error": type(err).__name__})
                await asyncio.sleep(1.0)
                continue
            await settle(msgs)


def _decode(msg: Msg, event_type: type[E]) -> E | BadInput:
    try:
        return event_type.from_json(msg.data)
    except ValidationError as err:
        detail = f"{event_type.__name__}: {err.error_count()} validation errors"
        return BadInput("malformed_event", detail)


async def _refuse(msg: Msg, err: BadInput) -> None:
    log.warning("message refused", extra={"subject": msg.subject, "reason": err.code})
    await msg.term()


async def _run_batch(
    handler: Callable[[list[E]], Awaitable[list[BadInput | None]]],
    good: list[tuple[Msg, E]],
    spec: ConsumerSpec,
    stop: asyncio.Event,
) -> list[BadInput | None] | None:
    """The handler's outcomes for a batch; None when the batch was handed back unsettled."""
    if not good:
        return []
    held = [msg for msg, _ in good]
    while True:
        try:
            return await handler([event for _, event in good])
        except Later as later:
            # Held here and tried again, not nak'd with a delay: Debian's nats-server 2.9
            # redelivers delayed naks seconds late and out of order (seen: one message of a
            # batch of two 17 s after the other), which stalled REDCap writes after an outage.
            if await _hold(held, later.seconds, spec.ack_wait_seconds / 3, stop):
                continue
            delay = 0.0  # stopping: whoever runs next takes the batch at once
        except Exception:  # the consume-loop boundary: the batch comes back later
            log.exception("batch handler failed", extra={"events": len(good)})
            delay = 5.0
        for msg in held:
            await msg.nak(delay=delay or None)
        return None


async def _hold(msgs: list[Msg], seconds: float, every: float, stop: asyncio.Event) -> bool:
    """Keep ``msgs`` unacknowledged and ours for ``seconds``; False if ``stop`` came first."""
    alive = [asyncio.create_task(_keep_in_progress(msg, every)) for msg in msgs]
    try:
        return await _wait_unless_stopped(seconds, stop)
    finally:
        for task in alive:
            task.cancel()


async def _wait_unless_stopped(seconds: float, stop: asyncio.Event) -> bool:
    """Sleep ``seconds``; False if ``stop`` came first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return not stop.is_set()


async def _keep_in_progress(msg: Msg, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(*NATS_DOWN):
            await msg.in_progress()


async def _settle(
    msg: Msg,
    event_type: type[E],
    handler: Callable[[E], Awaitable[None]],
    on_bad_input: Callable[[E | None, BadInput, Msg], Awaitable[None]] | None,
    hold_later_up_to: float = 0.0,
) -> float | None:
    """Run the handler and settle ``msg``; or, for a :class:`Later` of at most
    ``hold_later_up_to`` seconds, leave it unsettled and return the delay to hold it for."""
    decoded = _decode(msg, event_type)
    event = None if isinstance(decoded, BadInput) else decoded
    try:
        if event is None:
            raise decoded  # type: ignore[misc]
        await handler(event)
    except BadInput as err:
        if on_bad_input is not None:
            await on_bad_input(event, err, msg)
        await _refuse(msg, err)
        return None
    except Unavailable as err:
        log.warning("dependency unavailable, will retry", extra={"error": str(err)})
        await msg.nak(delay=5.0)
        return None
    except Later as later:
        if later.seconds <= hold_later_up_to:
            return later.seconds
        await msg.nak(delay=later.seconds)
        return None
    except Exception:  # the consume-loop boundary: log once, let JetStream redeliver
        log.exception("handler failed", extra={"subject": msg.subject})
        await msg.nak(delay=5.0)
        return None
    await msg.ack()
    return None


def _is_ack(data: bytes) -> bool:
    """A JetStream publish acknowledgement (``{"stream": ..., "seq": ...}``), not an error."""
    try:
        reply = json.loads(data)
    except ValueError:
        return False  # e.g. an empty "no responders" status message
    return isinstance(reply, dict) and "seq" in reply and "error" not in reply


def _matches(patterns: list[str], subject: str) -> bool:
    parts = subject.split(".")
    for pattern in patterns:
        tokens = pattern.split(".")
        if tokens[-1] == ">" and parts[: len(tokens) - 1] == tokens[:-1]:
            return True
        same_length = len(tokens) == len(parts)
        if same_length and all(t in ("*", p) for t, p in zip(tokens, parts, strict=True)):
            return True
    return False


async def _on_error(err: Exception) -> None:
    # nats-py's default logs a traceback per failed reconnect attempt; one line is enough.
    log.warning("NATS connection problem", extra={"error": type(err).__name__})


async def _on_disconnected() -> None:
    log.warning("NATS disconnected, reconnecting")


async def _on_reconnected() -> None:
    log.info("NATS reconnected")


async def connect(target: NatsTarget | str, name: str, **callbacks: Any) -> Bus:
    """Connect once; reconnects forever afterwards.

    While NATS is down, nats-py keeps trying (callers that cannot wait bound this with a
    timeout, see fiona_ops.janitor_service).

    Raises:
        Unavailable: a failure nats-py gives up on.
        ConfigError: NATS refused the credentials or TLS (no retry fixes that).
    """
    target = as_target(target)
    on_error = callbacks.pop("error_cb", _on_error)
    connecting = True

    async def error_cb(err: Exception) -> None:
        # nats-py retries a refused login forever, like a NATS that is down; raising here,
        # while the first connection is made, is the one way to end its connect().
        refusal = refused(target, err)
        if connecting and refusal is not None:
            raise refusal
        await on_error(err)

    callbacks = {
        "disconnected_cb": _on_disconnected,
        "reconnected_cb": _on_reconnected,
        **callbacks,
    }
    nc = NatsClient()
    try:
        await nc.connect(
            name=name,
            connect_timeout=2,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            allow_reconnect=True,
            error_cb=error_cb,
            **target.connect_options(),
            **callbacks,
        )
    except ConfigError:
        # After a failed TLS handshake nats-py's close waits for a TLS goodbye that never comes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(nc.close(), 1)
        raise
    except NATS_DOWN as err:
        raise Unavailable(f"NATS at {target} is not reachable: {type(err).__name__}") from err
    connecting = False
    return Bus(nc=nc, js=nc.jetstream())


def _tracking_connection(callbacks: dict[str, Any], gauge: "Gauge") -> dict[str, Any]:
    """``callbacks`` plus keeping ``gauge`` (``fiona_nats_connected``) up to date."""

    def tracked(key: str, connected: int, default: Callable[[], Awaitable[None]] | None) -> Any:
        then = callbacks.get(key, default)

        async def callback() -> None:
            gauge.set(connected)
            if then is not None:
                await then()

        return callback

    return callbacks | {
        "disconnected_cb": tracked("disconnected_cb", 0, _on_disconnected),
        "reconnected_cb": tracked("reconnected_cb", 1, _on_reconnected),
        "closed_cb": tracked("closed_cb", 0, None),
    }


async def connect_when_available(
    target: NatsTarget | str,
    name: str,
    stop: asyncio.Event,
    retry_seconds: float = 1.0,
    **callbacks: Any,
) -> Bus | None:
    """Keep trying :func:`connect` until it works or ``stop`` is set (then None).

    A :class:`ConfigError` (NATS refused the credentials) is raised: the service stops.

    The service's connection: ``fiona_nats_connected{client=name}`` is 0 until it works and
    while it is lost, 1 while it is up.
    """
    # Imported here: importing the bus must not import prometheus-client (a receiver with
    # several workers sets up its metrics folder first, see services/receiver/workers.py).
    from fiona_common.metrics import NATS_CONNECTED

    connected = NATS_CONNECTED.labels(name)
    connected.set(0)
    callbacks = _tracking_connection(callbacks, connected)
    while not stop.is_set():
        try:
            bus = await connect(target, name, **callbacks)
        except Unavailable as err:
            log.warning("waiting for NATS", extra={"error": str(err)})
        else:
            try:
                await bus.ensure_streams()
                connected.set(1 if bus.connected else 0)
                return bus
            except NATS_DOWN as err:
                log.warning("NATS not ready for streams", extra={"error": type(err).__name__})
                await bus.nc.close()
        try:
            await asyncio.wait_for(stop.wait(), retry_seconds)
        except TimeoutError:
            pass
    return None
