"""``fiona run redcap-sync``: projects file, registry, routes, transfer requests (local mode)."""

import asyncio
import contextlib
import logging
from functools import partial
from pathlib import Path

from fiona_common.bus import NATS_DOWN, ConsumerSpec, connect_when_available
from fiona_common.errors import FionaError
from fiona_common.layout import Layout
from fiona_common.messages import StudyComplete, TransferResult
from fiona_common.projects import Catalog, projects_path, watch_catalog
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import Settings
from fiona_common.watched import WatchedFile
from services.redcap_sync import autoid, coupling
from services.redcap_sync.api import make_api, read_token
from services.redcap_sync.demo import write_demo
from services.redcap_sync.handlers import (
    SyncDeps,
    on_study_complete,
    on_transfer_result,
    reevaluate,
)
from services.redcap_sync.identity import Identity
from services.redcap_sync.store import Registry

log = logging.getLogger(__name__)

STUDIES = ConsumerSpec(durable="redcap-sync", ack_wait_seconds=60)
RESULTS = ConsumerSpec(durable="redcap-sync-results", ack_wait_seconds=60, max_deliver=50)


def key_path(settings: Settings) -> Path:
    return settings.redcap_sync.key_file or settings.datadir / "state" / "secrets" / "identity.key"


def open_catalog(settings: Settings) -> WatchedFile[Catalog]:
    """The projects file, watched; the demo project is written when none is configured yet."""
    path = projects_path(settings)
    if settings.redcap_sync.projects_file is None and not path.exists():
        write_demo(path)
        log.info("no projects file yet: wrote the demo project", extra={"path": str(path)})
    return watch_catalog(path)


def open_identity(settings: Settings) -> Identity:
    return Identity.from_file(key_path(settings), create=settings.redcap_sync.key_file is None)


def main(settings: Settings) -> int:
    open_catalog(settings)  # a broken projects file stops start-up with its error
    open_identity(settings)
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
    bus = await connect_when_available(ctx.nats_url, "fiona-redcap-sync", ctx.stop)
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
    try:
        await asyncio.gather(
            bus.consume(StudyComplete, STUDIES, partial(on_study_complete, deps=deps), ctx.stop),
            bus.consume(TransferResult, RESULTS, partial(on_transfer_result, deps=deps), ctx.stop),
            keep_reevaluating(deps, ctx),
        )
    finally:
        observer.stop()
        await bus.close()
