"""``fiona janitor [--dry-run] [--force]`` and ``fiona janitor --loop`` (what ``fiona up`` runs).

The command runs one round (:mod:`fiona_ops.janitor`) and says what it did or, with
``--dry-run``, what it would do; its deletions are JSON log lines too. ``--loop`` runs a round at
start and then every ``JANITOR.INTERVAL_SECONDS`` like a service: ``/metrics``
(``fiona_janitor_*``), ``/healthz`` and ``/readyz`` on ``JANITOR.HTTP_PORT``.
"""

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any, TextIO

from fiona_common.bus import NATS_DOWN, Bus, connect, connect_when_available
from fiona_common.errors import Unavailable
from fiona_common.logs import configure_logging, short_hash
from fiona_common.nats_auth import NatsTarget, nats_target
from fiona_common.service import ServiceContext, run_service
from fiona_common.settings import Settings
from fiona_ops.janitor import Report, run_round

log = logging.getLogger(__name__)

CONNECT_SECONDS = 10.0


def run_loop(settings: Settings) -> int:
    """``fiona janitor --loop``: a round every JANITOR.INTERVAL_SECONDS until stopped."""
    return run_service("janitor", settings, settings.janitor.http_port, janitor_service)


async def janitor_service(ctx: ServiceContext) -> None:
    bus = await connect_when_available(ctx.nats, "fiona-janitor", ctx.stop)
    if bus is None:
        return
    ctx.health.set_check("nats", True)
    try:
        while not ctx.stop.is_set():
            started = time.monotonic()
            try:
                report = await run_round(ctx.settings, bus, force=False, dry_run=False)
                ctx.health.set_detail("last_round", summary(report))
            except NATS_DOWN as err:  # OSError too: a disk problem; the next round tries again
                log.error("janitor round failed", extra={"error": f"{type(err).__name__}: {err}"})
            wait = ctx.settings.janitor.interval_seconds - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stop.wait(), max(0.0, wait))
    finally:
        await bus.close()


def run_command(settings: Settings, *, dry_run: bool, force: bool, out: TextIO = sys.stdout) -> int:
    """``fiona janitor [--dry-run] [--force]``: one round, then what it did (or would do)."""
    if not dry_run:
        configure_logging("janitor", settings.log_level)  # the deletions' audit lines
    report = asyncio.run(_once(settings, dry_run=dry_run, force=force))
    for line in describe(report, settings):
        print(line, file=out)
    return 0


async def _once(settings: Settings, *, dry_run: bool, force: bool) -> Report:
    bus = await _connect(nats_target(settings))
    try:
        return await run_round(settings, bus, force=force, dry_run=dry_run)
    except NATS_DOWN as err:
        raise Unavailable(f"janitor stopped: {type(err).__name__} {err}") from None
    finally:
        await bus.close()


async def _connect(nats: NatsTarget) -> Bus:
    """Connected within CONNECT_SECONDS, or one line for whoever runs the command."""

    async def quiet(*_args: object) -> None:  # reported once, below; closing is no news
        pass

    try:
        janitor = connect(nats, "fiona-janitor", error_cb=quiet, disconnected_cb=quiet)
        return await asyncio.wait_for(janitor, CONNECT_SECONDS)
    except TimeoutError:
        raise Unavailable(f"NATS at {nats} is not reachable") from None


def summary(report: Report) -> dict[str, Any]:
    return {
        "deleted_studies": len(report.deleted),
        "freed_bytes": sum(d.study.size_bytes for d in report.deleted) + report.leftover_bytes,
        "used_percent": {site: round(used * 100, 1) for site, used in report.used.items()},
        "leftovers": report.leftovers,
        **report.sweep,
    }


def describe(report: Report, settings: Settings) -> list[str]:
    """The round for a person: study hashes, sizes, reasons; never a PatientID or UID."""
    verb = "would delete" if report.dry_run else "deleted"
    j = settings.janitor
    lines = []
    for plan in report.plans:
        where = ", ".join(plan.sites)
        lines.append(
            f"disk of {where}: {plan.usage.ratio:.1%} used "
            f"(high water {j.high_water_percent:g} %, low water {j.low_water_percent:g} %)"
        )
        shown = (
            plan.deletions
            if report.dry_run
            else [d for d in report.deleted if d.study.site in plan.sites]
        )
        for d in shown:
            age = (report.now - d.study.last_change).total_seconds() / 86400
            lines.append(
                f"  {verb} study {short_hash(d.study.study_uid)}  {_mb(d.study.size_bytes)}  "
                f"{d.reason.value} ({d.study.standing.value}, {age:.1f} days old)"
            )
        if plan.kept:
            kept = ", ".join(f"{n} {s.value}" for s, n in sorted(plan.kept.items()))
            lines.append(f"  kept: {kept} (not delivered everywhere: --force deletes them too)")
        if plan.deletions and report.dry_run:
            lines.append(f"  expected afterwards: {plan.expected.ratio:.1%} used")
        elif plan.deletions:
            lines.append(f"  now: {report.used[plan.sites[0]]:.1%} used")
    if report.changed:
        lines.append(f"{report.changed} studies changed meanwhile and were kept")
    lines.append(
        f"{verb} {report.leftovers} leftover staging/export folders ({_mb(report.leftover_bytes)})"
    )
    s = report.sweep
    lines.append(
        f"{verb} {s['stale_link']} dangling links, {s['orphan_summary']} orphaned series "
        f"summaries, {s['empty_folder']} empty folders"
    )
    return lines


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
