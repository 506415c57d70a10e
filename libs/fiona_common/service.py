"""The shared runner: logging, HTTP endpoints, signals and a clean stop, once for all services."""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fiona_common.logs import configure_logging
from fiona_common.metrics import Api, ErrorRecorder, Health, HttpServer
from fiona_common.nats_auth import DEFAULT_NATS_URL, NatsTarget, nats_target
from fiona_common.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_NATS_URL", "ServiceBody", "ServiceContext", "run_service"]


@dataclass
class ServiceContext:
    """What every service body gets: its settings, health and the stop signal."""

    name: str
    settings: Settings
    health: Health
    stop: asyncio.Event
    api: Api = field(default_factory=Api)  # set api.handler to serve JSON under /api/

    @property
    def nats_url(self) -> str:
        return self.settings.nats_url or DEFAULT_NATS_URL

    @property
    def nats(self) -> NatsTarget:
        """The NATS to connect to, with the configured credentials and TLS."""
        return nats_target(self.settings)


ServiceBody = Callable[[ServiceContext], Awaitable[None]]


def run_service(name: str, settings: Settings, http_port: int, body: ServiceBody) -> int:
    """Run ``body`` until SIGINT/SIGTERM; returns the process exit code.

    ``body`` must return soon after ``ctx.stop`` is set, having drained its work.
    """
    configure_logging(name, settings.log_level)
    health = Health(name)
    logging.getLogger().addHandler(ErrorRecorder(health))
    api = Api()
    http = HttpServer(settings.http_host, http_port, health, api=api).start()
    log.info("service starting", extra={"http_port": http.port})
    try:
        asyncio.run(_main(ServiceContext(name, settings, health, asyncio.Event(), api), body))
    finally:
        http.stop()
    log.info("service stopped")
    return 0


async def _main(ctx: ServiceContext, body: ServiceBody) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Signal handlers only set the stop event; the body drains and returns.
        loop.add_signal_handler(sig, ctx.stop.set)
    await body(ctx)
