"""``fiona run exporter``: wires settings, the projects file, the key, NATS and the consumers."""

import asyncio
from functools import partial
from pathlib import Path

from fiona_common.bus import ConsumerSpec, connect_when_available
from fiona_common.lag import report_pending
from fiona_common.layout import Layout
from fiona_common.messages import TransferRequested
from fiona_common.projects import projects_path, watch_catalog
from fiona_common.secret_files import read_key
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import Settings
from services.exporter import ledger
from services.exporter.handlers import ExporterDeps, on_transfer_requested


def consumers(ack_wait_seconds: float) -> list[ConsumerSpec]:
    """One consumer per partition of the requests (a partition holds whole studies), one
    request in hand each: replicas share the work and never work on the same study at once."""
    return [
        ConsumerSpec(
            durable=f"exporter-p{n:02d}",
            partition=n,
            ack_wait_seconds=ack_wait_seconds,  # renewed while a request is worked on
            max_ack_pending=1,
            max_deliver=100,  # retries come back through redelivery (Later)
        )
        for n in range(TransferRequested.partitions)
    ]


def key_path(settings: Settings) -> Path:
    return settings.exporter.key_file or settings.datadir / "state" / "secrets" / "deid.key"


def main(settings: Settings) -> int:
    read_key(key_path(settings), create=settings.exporter.key_file is None)
    return run_service("exporter", settings, settings.exporter.http_port, exporter)


async def exporter(ctx: ServiceContext) -> None:
    settings = ctx.settings
    path = projects_path(settings)
    catalog = watch_catalog(path)
    observer = catalog.watch()
    listeners = settings.listeners()
    bus = await connect_when_available(ctx.nats, "fiona-exporter", ctx.stop)
    if bus is None:
        observer.stop()
        return
    await bus.ensure_streams()
    deps = ExporterDeps(
        layouts={ls.name: Layout(ls.datadir) for ls in listeners},
        catalog=lambda: catalog.current,
        key=read_key(key_path(settings)),
        ledgers=await bus.kv(ledger.BUCKET),
        bus=bus,
        settings=settings.exporter,
        staging=settings.exporter.staging_dir or settings.datadir / "state" / "staging",
        outboxes={ls.name: ls.datadir / "outbox" for ls in listeners},
    )
    ctx.health.set_check("nats", True)
    handler = partial(on_transfer_requested, deps=deps)
    specs = consumers(settings.exporter.ack_wait_seconds)

    def backlog(found: dict[str, int]) -> None:
        ctx.health.set_detail("consumer_backlog", sum(found.values()))

    durables = [(TransferRequested, spec.durable) for spec in specs]
    # A retry is held here, not nak'd with a delay (see Bus.consume): each partition takes
    # one request at a time (max_ack_pending 1), so nothing else could run meanwhile anyway.
    # Longer waits (an SFTP upload window) go back to the server.
    hold = settings.exporter.max_retry_seconds
    try:
        await asyncio.gather(
            *(
                bus.consume(
                    TransferRequested, spec, handler, ctx.stop, batch=1, hold_later_up_to=hold
                )
                for spec in specs
            ),
            report_pending(bus, durables, ctx.stop, then=backlog),
        )
    finally:
        observer.stop()
        await bus.close()
