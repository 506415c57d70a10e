"""``fiona run heartbeat``: checks every configured peer periodically (the original's
``heartbeat.sh``, for FIONA's outside world rather than its own listener).

Each round (every ``HEARTBEAT.INTERVAL_SECONDS``) checks all peers at once (which and how:
:mod:`fiona_ops.peers`), each within ``HEARTBEAT.TIMEOUT_SECONDS``, and publishes
``fiona_peer_up{peer}`` and ``fiona_peer_rtt_seconds{peer}``; ``/readyz`` carries the same per
peer (``details.peers``) for ``fiona status``. A peer going down or coming back is logged once.
The projects file is read each round, so destinations added or removed are followed; peers
no longer configured disappear from the metrics.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from fiona_common.errors import ConfigError, FionaError
from fiona_common.projects import Catalog, load_catalog, projects_path
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import Settings
from fiona_ops import metrics
from fiona_ops.peers import Peer, configured_peers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    peer: Peer
    rtt_seconds: float | None  # None: down
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.rtt_seconds is not None

    def detail(self) -> dict[str, Any]:
        rtt = None if self.rtt_seconds is None else round(self.rtt_seconds * 1000, 1)
        found = {"kind": self.peer.kind, "up": self.up, "rtt_ms": rtt}
        return found | ({"error": self.error} if self.error else {})


def main(settings: Settings) -> int:
    return run_service("heartbeat", settings, settings.heartbeat.http_port, heartbeat)


async def heartbeat(ctx: ServiceContext) -> None:
    # A down peer makes pynetdicom log errors each round; the heartbeat reports it once.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    rounds = Rounds(ctx)
    # Ready at once: a peer being down is what it reports, not a reason to be unready.
    ctx.health.set_check("checking", True)
    while not ctx.stop.is_set():
        started = time.monotonic()
        await rounds.run_once()
        wait = ctx.settings.heartbeat.interval_seconds - (time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), max(0.0, wait))


class Rounds:
    """One heartbeat's memory between rounds: the last projects file and who was up."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.catalog: Catalog | None = None
        self.was_up: dict[str, bool] = {}

    async def run_once(self) -> list[Outcome]:
        peers = configured_peers(self.ctx.settings, self._catalog(), self.ctx.nats)
        timeout = self.ctx.settings.heartbeat.timeout_seconds
        outcomes = await asyncio.gather(*(check(peer, timeout) for peer in peers))
        self._publish(outcomes)
        return list(outcomes)

    def _catalog(self) -> Catalog | None:
        path = projects_path(self.ctx.settings)
        if not path.exists():
            return None
        try:
            self.catalog = load_catalog(path)
        except ConfigError as err:  # keep checking the destinations of the last good version
            log.warning("projects file refused, last version used", extra={"error": str(err)})
        return self.catalog

    def _publish(self, outcomes: list[Outcome]) -> None:
        names = {o.peer.name for o in outcomes}
        for gone in set(self.was_up) - names:
            with contextlib.suppress(KeyError):
                metrics.PEER_UP.remove(gone)
                metrics.PEER_RTT.remove(gone)
            del self.was_up[gone]
        for outcome in outcomes:
            name = outcome.peer.name
            metrics.PEER_UP.labels(name).set(1 if outcome.up else 0)
            metrics.CHECKS.labels("up" if outcome.up else "down").inc()
            if outcome.rtt_seconds is not None:
                metrics.PEER_RTT.labels(name).set(outcome.rtt_seconds)
            else:
                with contextlib.suppress(KeyError):
                    metrics.PEER_RTT.remove(name)
            self._log_change(outcome)
        self.ctx.health.set_detail("peers", {o.peer.name: o.detail() for o in outcomes})

    def _log_change(self, outcome: Outcome) -> None:
        before = self.was_up.get(outcome.peer.name)
        self.was_up[outcome.peer.name] = outcome.up
        if before is None or before != outcome.up:
            if outcome.up:
                log.info("peer up", extra={"peer": outcome.peer.name})
            else:
                log.warning("peer down", extra={"peer": outcome.peer.name, "error": outcome.error})


async def check(peer: Peer, limit: float) -> Outcome:
    """One peer's check, never longer than ``limit`` seconds (plus one for its thread to end)."""
    try:
        rtt = await asyncio.wait_for(peer.check(), limit + 1.0)
    except TimeoutError:
        return Outcome(peer, None, f"no answer within {limit:.0f} s")
    except FionaError as err:
        return Outcome(peer, None, str(err))
    return Outcome(peer, rtt)
