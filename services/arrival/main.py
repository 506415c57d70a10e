"""``fiona run arrival``: wires settings, NATS (streams, bucket, consumers) and the sweeper."""

import asyncio
import contextlib
from functools import partial

from fiona_common.bus import NATS_DOWN, Bus, ConsumerSpec, connect_when_available
from fiona_common.consumers import CLASSIFIER_DURABLES
from fiona_common.layout import Layout
from fiona_common.messages import InstanceStored, SeriesUpdated
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import ArrivalSettings, Settings
from services.arrival import metrics
from services.arrival.announcements import expected_bucket, follow_expected
from services.arrival.decide import Policy
from services.arrival.handlers import (
    BUCKET,
    OPEN_BUCKET,
    ArrivalDeps,
    on_instances_stored,
    on_series_updated,
    on_study_expected,
)
from services.arrival.sweeper import Sweeper

# All instance partitions in one consumer: counting is cheap, and replicas updating the same
# study take turns through compare-and-set.
INSTANCES = ConsumerSpec(durable="arrival", ack_wait_seconds=60, max_ack_pending=1024)
SERIES = ConsumerSpec(durable="arrival-series", ack_wait_seconds=60)
KEEP_SECONDS = 14 * 24 * 3600  # as long as the streams keep events: late arrivals still reopen


def policy_of(settings: ArrivalSettings) -> Policy:
    return Policy(
        quiet_seconds=settings.quiet_seconds,
        study_quiet_seconds=settings.study_quiet_seconds,
        grace_seconds=settings.grace_seconds,
        max_open_seconds=settings.max_open_seconds,
        quiet_seconds_by_aet=dict(settings.quiet_seconds_by_aet),
        quiet_seconds_by_site=dict(settings.quiet_seconds_by_site),
    )


def main(settings: Settings) -> int:
    return run_service("arrival", settings, settings.arrival.http_port, arrival)


async def report_lag(bus: Bus, ctx: ServiceContext) -> None:
    while not ctx.stop.is_set():
        with contextlib.suppress(*NATS_DOWN):
            backlog = await bus.backlog(InstanceStored, INSTANCES.durable)
            metrics.CONSUMER_LAG.set(backlog)
            ctx.health.set_detail("consumer_backlog", backlog)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), 5.0)


async def arrival(ctx: ServiceContext) -> None:
    layouts = {ls.name: Layout(ls.datadir) for ls in ctx.settings.listeners()}
    bus = await connect_when_available(ctx.nats, "fiona-arrival", ctx.stop)
    if bus is None:
        return
    await bus.ensure_streams()
    kv = await bus.kv(BUCKET, history=1, ttl_seconds=KEEP_SECONDS)
    open_kv = await bus.kv(OPEN_BUCKET, history=1, ttl_seconds=KEEP_SECONDS)
    expected_kv = await expected_bucket(bus)
    deps = ArrivalDeps(layouts, kv, open_kv, bus, policy_of(ctx.settings.arrival))
    sweeper = Sweeper(deps, [INSTANCES.durable, *CLASSIFIER_DURABLES], ctx.health)
    ctx.health.set_check("nats", True)
    try:
        await asyncio.gather(
            bus.consume_batches(
                InstanceStored, INSTANCES, partial(on_instances_stored, deps=deps), ctx.stop, 256
            ),
            bus.consume(SeriesUpdated, SERIES, partial(on_series_updated, deps=deps), ctx.stop),
            sweeper.follow(ctx.stop),
            follow_expected(expected_kv, partial(on_study_expected, deps=deps), ctx.stop),
            sweeper.run(ctx.stop),
            report_lag(bus, ctx),
        )
    finally:
        await bus.close()
