"""``fiona run redcap-sync``: projects, registry, routes, transfer requests; REDCap when configured.

In local mode the projects file and the key-value buckets are everything. With a REDCap url,
REDCap is read on a schedule (projects, rules, lists, mappings, requests; redcap_pull) and
written from three durable queues (studies, requests, results; redcap_push).
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from nats.js.kv import KeyValue

from fiona_common.bus import NATS_DOWN, Bus, ConsumerSpec, connect_when_available
from fiona_common.errors import FionaError
from fiona_common.lag import Durable, report_pending
from fiona_common.layout import Layout
from fiona_common.messages import Event, StudyComplete, TransferRequested, TransferResult
from fiona_common.projects import (
    Catalog,
    admin_projects_path,
    load_catalog,
    projects_path,
    watch_catalog,
)
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import Settings
from fiona_common.watched import WatchedFile
from services.redcap_sync import autoid, coupling, metrics, redcap_rows
from services.redcap_sync.api import make_api, read_token
from services.redcap_sync.demo import write_demo
from services.redcap_sync.handlers import (
    SyncDeps,
    on_study_complete,
    on_transfer_result,
    reevaluate,
)
from services.redcap_sync.identity import Identity
from services.redcap_sync.redcap_api import Redcap, open_redcap
from services.redcap_sync.redcap_pull import RedcapPull
from services.redcap_sync.redcap_push import RedcapWriter
from services.redcap_sync.store import Registry

log = logging.getLogger(__name__)

STUDIES = ConsumerSpec(durable="redcap-sync", ack_wait_seconds=60)
RESULTS = ConsumerSpec(durable="redcap-sync-results", ack_wait_seconds=60, max_deliver=50)


def key_path(settings: Settings) -> Path:
    return settings.redcap_sync.key_file or settings.datadir / "state" / "secrets" / "identity.key"


def open_catalog(settings: Settings) -> WatchedFile[Catalog]:
    """The projects file, watched; the demo project is written when none is configured yet."""
    admin = admin_projects_path(settings)
    if settings.redcap_sync.projects_file is None and not admin.exists():
        write_demo(admin)
        log.info("no projects file yet: wrote the demo project", extra={"path": str(admin)})
    return watch_catalog(projects_path(settings))


def open_identity(settings: Settings) -> Identity:
    return Identity.from_file(key_path(settings), create=settings.redcap_sync.key_file is None)


def main(settings: Settings) -> int:
    open_catalog(settings)  # a broken projects file stops start-up with its error
    open_identity(settings)
    open_redcap(settings)  # a missing or malformed token file stops start-up
    if settings.redcap_sync.api_token_file is not None:
        read_token(settings.redcap_sync.api_token_file)
    return run_service("redcap_sync", settings, settings.redcap_sync.http_port, redcap_sync)


async def keep_reevaluating(deps: SyncDeps, ctx: ServiceContext) -> None:
    while not ctx.stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), ctx.settings.redcap_sync.reevaluate_seconds)
        if ctx.stop.is_set():
            return
        try:
            assigned = await reevaluate(deps)
        except (FionaError, *NATS_DOWN) as err:
            log.warning("re-evaluation failed", extra={"error": type(err).__name__})
            continue
        if assigned:
            log.info("unassigned studies assigned", extra={"studies": assigned})


async def redcap_sync(ctx: ServiceContext) -> None:
    catalog = open_catalog(ctx.settings)
    observer = catalog.watch()
    identity = open_identity(ctx.settings)
    layouts = {ls.name: Layout(ls.datadir) for ls in ctx.settings.listeners()}
    bus = await connect_when_available(ctx.nats, "fiona-redcap-sync", ctx.stop)
    if bus is None:
        observer.stop()
        return
    max_age = ctx.settings.redcap_sync.coupling_max_age_days * 86400
    deps = SyncDeps(
        layouts=layouts,
        catalog=lambda: catalog.current,
        identity=identity,
        registry=await Registry.open(bus),
        autoid=await bus.kv(autoid.BUCKET),
        coupling=await bus.kv(coupling.BUCKET, ttl_seconds=max_age),
        settings=ctx.settings.redcap_sync,
    )
    token_file = ctx.settings.redcap_sync.api_token_file
    if token_file is not None:
        ctx.api.handler = make_api(deps, asyncio.get_running_loop(), read_token(token_file))
    ctx.health.set_check("nats", True)
    work = [
        bus.consume(StudyComplete, STUDIES, partial(on_study_complete, deps=deps), ctx.stop),
        bus.consume(TransferResult, RESULTS, partial(on_transfer_result, deps=deps), ctx.stop),
        keep_reevaluating(deps, ctx),
    ]
    durables: list[Durable] = [(StudyComplete, STUDIES.durable), (TransferResult, RESULTS.durable)]
    rc = open_redcap(ctx.settings)
    if rc is not None:
        work += await redcap_work(rc, bus, deps, ctx, catalog.reload)
        durables += WRITERS.items()
    work.append(report_pending(bus, durables, ctx.stop, then=partial(count_pending, ctx)))
    try:
        await asyncio.gather(*work)
    finally:
        observer.stop()
        await bus.close()


# REDCap writers: one batch at a time per queue (in order), never dropped while REDCap is down.
def _writer(durable: str, settings: Settings) -> ConsumerSpec:
    chunk = settings.redcap_sync.redcap.chunk
    return ConsumerSpec(
        durable=durable, ack_wait_seconds=300, max_deliver=-1, max_ack_pending=chunk
    )


WRITERS: dict[type[Event], str] = {
    StudyComplete: "redcap-write-studies",
    TransferRequested: "redcap-write-requests",
    TransferResult: "redcap-write-results",
}


def redcap_puller(
    settings: Settings,
    rc: Redcap,
    deps: SyncDeps,
    rows: KeyValue,
    reload: Callable[[], object] = lambda: None,
) -> RedcapPull:
    admin = admin_projects_path(settings)
    state = settings.datadir / "state" / "redcap"
    return RedcapPull(rc, deps, rows, state, lambda: load_catalog(admin), reload)


async def redcap_work(
    rc: Redcap, bus: Bus, deps: SyncDeps, ctx: ServiceContext, reload: Callable[[], object]
) -> list[Coroutine[Any, Any, None]]:
    metrics.start_redcap_metrics()
    rows = await bus.kv(redcap_rows.BUCKET)
    writer = RedcapWriter(rc, rows, deps)
    pull = redcap_puller(ctx.settings, rc, deps, rows, reload)
    chunk = ctx.settings.redcap_sync.redcap.chunk
    handlers: dict[type[Event], Any] = {
        StudyComplete: writer.write_studies,
        TransferRequested: writer.write_requests,
        TransferResult: writer.write_results,
    }
    return [
        *(
            bus.consume_batches(
                kind, _writer(WRITERS[kind], ctx.settings), handler, ctx.stop, chunk
            )
            for kind, handler in handlers.items()
        ),
        keep_pulling(pull, ctx),
    ]


async def keep_pulling(pull: RedcapPull, ctx: ServiceContext) -> None:
    """Read REDCap now and then every sync_seconds (a failed part keeps its last good copy)."""
    every = ctx.settings.redcap_sync.redcap.sync_seconds
    while not ctx.stop.is_set():
        outcome = await pull.pull_all()
        # A detail, not a readiness check: REDCap down delays its sync but stops nothing here.
        ctx.health.set_detail("redcap", outcome)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), every)


def count_pending(ctx: ServiceContext, found: dict[str, int]) -> None:
    """From a round of consumer backlogs: the events waiting for redcap-sync's own consumers,
    and, once all three REDCap writers answered, the writes waiting for REDCap."""
    ctx.health.set_detail(
        "consumer_backlog", sum(found.get(d, 0) for d in (STUDIES.durable, RESULTS.durable))
    )
    if all(durable in found for durable in WRITERS.values()):
        pending = sum(found[durable] for durable in WRITERS.values())
        metrics.REDCAP_PENDING.set(pending)
        ctx.health.set_detail("redcap_pending_writes", pending)
