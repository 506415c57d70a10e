"""``fiona run classifier``: wires settings, the rule book, NATS (stream, KV, consumer)."""

import asyncio
import contextlib
from functools import partial

from fiona_common.bus import NATS_DOWN, Bus, ConsumerSpec, connect_when_available
from fiona_common.consumers import CLASSIFIER_DURABLES
from fiona_common.layout import Layout
from fiona_common.messages import InstanceStored
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import Settings
from services.classifier import metrics
from services.classifier.handlers import ClassifierDeps, on_instances_stored
from services.classifier.rulebook import RuleBook
from services.classifier.state import BUCKET

BATCH = 256
# One durable consumer per partition of the instance events (a partition holds whole series).
# At most one batch of a partition is in flight (max_ack_pending = BATCH), so while one
# replica works on a partition the others take other partitions: replicas share the work
# without two of them racing on the same series' state. A replica that dies leaves its batch
# unacknowledged, and another one gets it after ack_wait.
CONSUMERS = [
    ConsumerSpec(durable=durable, partition=n, ack_wait_seconds=60, max_ack_pending=BATCH)
    for n, durable in enumerate(CLASSIFIER_DURABLES)
]


async def report_lag(bus: Bus, ctx: ServiceContext) -> None:
    while not ctx.stop.is_set():
        with contextlib.suppress(*NATS_DOWN):
            backlog = 0
            for consumer in CONSUMERS:
                backlog += await bus.backlog(InstanceStored, consumer.durable)
            metrics.CONSUMER_LAG.set(backlog)
            ctx.health.set_detail("consumer_backlog", backlog)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), 5.0)


def main(settings: Settings) -> int:
    RuleBook(settings.classifier.rules_file)  # a broken rule file stops start-up with its error
    return run_service("classifier", settings, settings.classifier.http_port, classifier)


async def classifier(ctx: ServiceContext) -> None:
    rules = RuleBook(ctx.settings.classifier.rules_file)
    observer = rules.watch()
    layouts = {ls.name: Layout(ls.datadir) for ls in ctx.settings.listeners()}
    bus = await connect_when_available(ctx.nats, "fiona-classifier", ctx.stop)
    if bus is None:
        return  # stopped before NATS came
    deps = ClassifierDeps(layouts, rules, await bus.kv(BUCKET, history=1), bus)
    ctx.health.set_check("nats", True)
    lag = asyncio.create_task(report_lag(bus, ctx))
    handler = partial(on_instances_stored, deps=deps)
    try:
        await asyncio.gather(
            *(
                bus.consume_batches(InstanceStored, spec, handler, ctx.stop, batch=BATCH)
                for spec in CONSUMERS
            )
        )
    finally:
        deps.reader.shutdown(wait=False)
        await lag
        if observer is not None:
            observer.stop()
        await bus.close()
