"""``fiona run receiver``: wires settings, listeners, inbox, event publishing and NATS."""

import asyncio
import ssl
import threading
from pathlib import Path

from fiona_common.bus import connect_when_available
from fiona_common.layout import Layout, group_id
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import DEFAULT_SITE, ReceiverSettings, Settings
from services.receiver import spool, tls, workers
from services.receiver.access import Switch, watch_enabled
from services.receiver.dicom_server import ReceiverServer, ServerOptions, start_server
from services.receiver.handlers import ListenerHandlers
from services.receiver.inbox import InboxImporter, run_importer
from services.receiver.ingest import IngestDeps
from services.receiver.publisher import EventPublisher, Watermark
from services.receiver.reconcile import reconcile_forever
from services.receiver.reserve import DiskReserve


def main(settings: Settings) -> int:
    # TLS files are read now: a bad one stops the service before anything has started.
    tls_context = tls.server_context(settings)
    return run_service(
        "receiver",
        settings,
        settings.receiver.http_port,
        lambda ctx: receiver(ctx, tls_context),
    )


def open_listener(
    deps: IngestDeps, rx: ReceiverSettings, tls_context: ssl.SSLContext | None = None
) -> tuple[list[ReceiverServer], Switch]:
    """The listener's DICOM port, plus RECEIVER.TLS_PORT when ``tls_context`` is given."""
    reserve = DiskReserve(deps.layout.incoming_dir, rx.min_free_bytes, rx.min_free_percent)
    handlers = ListenerHandlers(deps, reserve=reserve)
    callbacks = handlers.callbacks()
    callbacks.tls_failed = tls.failure_counter(deps.listener.name)
    options = ServerOptions(
        deps.layout.incoming_dir,
        rx.max_pdu_bytes,
        rx.max_associations,
        rx.idle_timeout_seconds,
        rx.tls_handshake_timeout_seconds,
    )
    address = (rx.bind_address, deps.listener.port)
    servers = [ReceiverServer(address, callbacks, options, reuse_port=rx.workers > 1)]
    if tls_context is not None and rx.tls_port is not None:
        servers.append(
            ReceiverServer(
                (rx.bind_address, rx.tls_port),
                callbacks,
                options,
                reuse_port=rx.workers > 1,
                tls_context=tls_context,
                slots=servers[0].slots,
            )
        )
    for server in servers:
        start_server(server)
    return servers, handlers.switch


async def receiver(ctx: ServiceContext, tls_context: ssl.SSLContext | None = None) -> None:
    rx = ctx.settings.receiver
    primary = rx.worker_index == 0
    layouts = {ls.name: Layout(ls.datadir) for ls in ctx.settings.listeners()}
    publisher = EventPublisher(
        {
            name: Watermark(workers.watermark_path(lay, rx.worker_index))
            for name, lay in layouts.items()
        },
        rx.max_pending_events,
    )
    publisher.bind_loop(asyncio.get_running_loop())
    thread_stop = threading.Event()
    servers, switches, observers, importers = [], dict[Path, Switch](), [], []
    for listener in ctx.settings.listeners():
        deps = IngestDeps(listener, layouts[listener.name], publisher)
        if primary:
            deps.layout.ensure(group_id(ctx.settings.shared_group))
            spool.remove_leftovers(deps.layout.incoming_dir)
            marks = [Watermark(p).read() for p in workers.watermark_paths(deps.layout)]
            publisher.require_rescan(listener.name, min(marks, default=0.0))
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
        # DICOM TLS is a second port of the main listener only (SITES listeners: plain).
        listener_tls = tls_context if listener.name == DEFAULT_SITE else None
        opened, switches[deps.layout.enabled_file] = open_listener(deps, rx, listener_tls)
        servers.extend(opened)
    ctx.health.set_check("listening", True)

    async def keep_nats() -> None:
        publisher.bus = await connect_when_available(ctx.nats, "fiona-receiver", ctx.stop)

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
        asyncio.create_task(
            workers.supervise_workers(workers.worker_children(ctx.settings), ctx.stop)
            if primary
            else workers.stop_with_parent(ctx.stop)
        ),
    ]
    await ctx.stop.wait()
    thread_stop.set()
    ctx.health.set_check("listening", False)
    for server in servers:
        server.shutdown()
        server.server_close()
    for observer in observers:
        observer.stop()
    for importer_thread in importers:
        importer_thread.join(timeout=10)
    await asyncio.gather(*tasks)
    if publisher.bus is not None:
        await publisher.bus.close()
