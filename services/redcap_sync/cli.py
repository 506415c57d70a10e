"""``fiona studies``, ``fiona assign``, ``fiona coupling import``, ``fiona redcap``: the registry
and REDCap from a terminal.

They work on JetStream directly (with the service running or not), through the same functions
as the service, so a request made here is checked and deduplicated exactly like the others.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from fiona_common.bus import Bus, connect
from fiona_common.errors import ConfigError
from fiona_common.layout import Layout
from fiona_common.nats_auth import nats_target
from fiona_common.projects import load_catalog, projects_path
from fiona_common.settings import Settings
from fiona_common.watched import read_text
from services.redcap_sync import autoid, coupling, redcap_rows
from services.redcap_sync.handlers import SyncDeps, assign
from services.redcap_sync.main import open_identity, redcap_puller
from services.redcap_sync.redcap_api import Redcap, open_redcap
from services.redcap_sync.redcap_setup import Finding, bootstrap, check
from services.redcap_sync.registry import StudyRecord
from services.redcap_sync.routes import read_facts
from services.redcap_sync.store import Registry

T = TypeVar("T")


async def _with_deps(settings: Settings, work: Callable[[SyncDeps], Awaitable[T]]) -> T:
    path = projects_path(settings)
    load_catalog(path)  # a broken file stops here, before anything is changed
    bus: Bus = await connect(nats_target(settings), "fiona-cli")
    try:
        deps = SyncDeps(
            layouts={ls.name: Layout(ls.datadir) for ls in settings.listeners()},
            catalog=lambda: load_catalog(path),  # as it is now (``fiona redcap sync`` rewrites it)
            identity=open_identity(settings),
            registry=await Registry.open(bus),
            autoid=await bus.kv(autoid.BUCKET),
            coupling=await bus.kv(coupling.BUCKET),
            settings=settings.redcap_sync,
        )
        return await work(deps)
    finally:
        await bus.close()


def assign_study(
    settings: Settings, study_uid: str, project: str, subject: str, event: str, site: str
) -> str:
    async def work(deps: SyncDeps) -> str:
        record = await assign(deps, site, study_uid, project, subject, event)
        transfer = next(
            t
            for t in record.transfers.values()
            if (t.project, t.subject, t.event) == (project, subject, event)
        )
        return (
            f"study {study_uid}: transfer {transfer.id} to {project} as {subject}: {transfer.state}"
        )

    return asyncio.run(_with_deps(settings, work))


def list_studies(settings: Settings, everything: bool, clear: bool) -> list[str]:
    """One line per complete study (unassigned ones only unless ``everything``)."""

    async def work(deps: SyncDeps) -> list[StudyRecord]:
        return await deps.registry.all_records()

    records = asyncio.run(_with_deps(settings, work))
    layouts = {ls.name: Layout(ls.datadir) for ls in settings.listeners()}
    lines = []
    for r in sorted(records, key=lambda r: (r.study_date, r.study_time, r.study_uid)):
        if r.assigned and not everything:
            continue
        who = f"patient {r.patient_id_hash[:12] or '-'}"
        if clear and r.site in layouts:  # clear text only from this host's own summaries
            facts = read_facts(layouts[r.site], r.site, r.study_uid)
            who = f"patient {facts.patient_id!r} {facts.patient_name!r}" if facts else who
        transfers = ", ".join(f"{t.project}/{t.subject}:{t.state}" for t in r.transfers.values())
        lines.append(
            f"{r.study_uid}  {r.study_date or '-'} {r.study_time[:6] or '-'}  "
            f"{r.description or '-'!r}  from {r.calling_aet or '-'}->{r.called_aet or '-'}  "
            f"{len(r.series)} series, {r.num_files} files  {who}  rev {r.revision}  "
            f"{transfers or 'unassigned'}"
        )
    return lines


def import_coupling(settings: Settings, file: Path) -> tuple[int, list[str]]:
    """Store the good rows; the bad ones are returned, each naming its line."""
    catalog = load_catalog(projects_path(settings))
    identity = open_identity(settings)
    good, bad = coupling.parse_csv(read_text(file), catalog, identity, datetime.now(UTC))

    async def store() -> None:
        bus = await connect(nats_target(settings), "fiona-cli")
        try:
            max_age = settings.redcap_sync.coupling_max_age_days * 86400
            kv = await bus.kv(coupling.BUCKET, ttl_seconds=max_age)
            for key, entry in good:
                await kv.put(key, entry.encode())
        finally:
            await bus.close()

    if good:
        asyncio.run(store())
    return len(good), bad


def _redcap(settings: Settings) -> Redcap:
    rc = open_redcap(settings)
    if rc is None:
        raise ConfigError("REDCap is not configured (REDCAP_SYNC.REDCAP.URL)")
    return rc


def redcap_sync_now(settings: Settings) -> dict[str, str]:
    """One pull from REDCap, as the service does it every sync_seconds."""
    rc = _redcap(settings)

    async def work(deps: SyncDeps) -> dict[str, str]:
        rows = await deps.registry.bus.kv(redcap_rows.BUCKET)
        return await redcap_puller(settings, rc, deps, rows).pull_all()

    return asyncio.run(_with_deps(settings, work))


def redcap_setup(settings: Settings, action: str) -> list[Finding]:
    rc = _redcap(settings)
    return bootstrap(rc) if action == "bootstrap" else check(rc)
