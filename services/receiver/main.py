"""``fiona run receiver``: wires settings, listeners, inbox, event publishing and NATS."""

import asyncio
import threading
from pathlib import Path

from fiona_common.bus import connect_when_available
from fiona_common.layout import Layout
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import Settings
from services.receiver import spool
from services.receiver.access import Switch, watch_enabled
from services.receiver.dicom_server import ReceiverServer, ServerOptions, start_server
from services.receiver.handlers import ListenerHandlers
from services.receiver.inbox import InboxImporter, run_importer
from services.receiver.ingest import IngestDeps
from services.receiver.publisher import EventPublisher, Watermark
from services.receiver.reconcile import reconcile_forever


def main(settings: Settings) -> int:
    return run_service("receiver", settings, settings.receiver.http_port, receiver)


async def receiver(ctx: ServiceContext) -> None:
    rx = ctx.settings.receiver
    listeners = ctx.settings.listeners()
    layouts = {ls.name: Layout(ls.datadir) for ls in listeners}
    for layout in layouts.values():
        layout.ensure()
        spool.remove_leftovers(layout.incoming_dir)
    watermarks = {
        name: Watermark(lay.state_dir / "receiver-watermark.json") for name, lay in layouts.items()
    }
    publisher = EventPublisher(watermarks, rx.max_pending_events)
    publisher.bind_loop(asyncio.get_running_loop())
    for name, mark in watermarks.items():
        publisher.require_rescan(name, mark.read())  # whatever the last run left unpublished

    thread_stop = threading.Event()
    switches: dict[Path, Switch] = {}
    servers, importers, observers = [], [], []
    for listener in listeners:
        deps = IngestDeps(listener, layouts[listener.name], publisher)
        handlers = ListenerHandlers(deps)
        switches[deps.layout.enabled_file] = handlers.switch
        options = ServerOptions(
            spool_dir=deps.layout.incoming_dir,
            max_pdu_bytes=rx.max_pdu_bytes,
            max_associations=rx.max_associations,
        )
        server = ReceiverServer(
            (rx.bind_address, listener.port),
            handlers.callbacks(),
            options,
            reuse_port=rx.workers > 1,
        )
        start_server(server)
        servers.append(server)
        importer = InboxImporter(deps, rx.inbox_settle_seconds)
        observers.append(importer.start_watching())
        importers.append(
            threading.Thread(
                target=run_importer,
                args=(importer, thread_stop),
                name=f"inbox-{listener.name}",
                daemon=True,
            )
        )
        importers[-1].start()
    ctx.health.set_check("listening", True)

    async def keep_nats() -> None:
        publisher.bus = await connect_when_available(ctx.nats_url, "fiona-receiver", ctx.stop)

    async def report_health() -> None:
        while not ctx.stop.is_set():
            ctx.health.set_detail("nats_connected", publisher.connected)
            ctx.health.set_detail("event_backlog", publisher.backlog)
            await asyncio.sleep(1.0)

    tasks = [
        asyncio.create_task(keep_nats()),
        asyncio.create_task(report_health()),
        asyncio.create_task(publisher.run(ctx.stop)),
        asyncio.create_task(watch_enabled(switches, ctx.stop, rx.enabled_poll_seconds)),
        asyncio.create_task(reconcile_forever(layouts, publisher, ctx.stop, thread_stop)),
    ]
    await ctx.stop.wait()
    thread_stop.set()
    ctx.health.set_check("listening", False)
    for server in servers:
        server.shutdown()
        server.server_close()
    for observer in observers:
        observer.stop()
    await asyncio.gather(*tasks)
    if publisher.bus is not None:
        await publisher.bus.nc.drain()
