"""Complete studies -> registry records and transfer requests; transfer results -> states."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.js.kv import KeyValue

from fiona_common.clock import utc_now
from fiona_common.errors import BadInput, Later, Unavailable
from fiona_common.layout import Layout, checked_uid
from fiona_common.messages import StudyComplete, TransferResult
from fiona_common.projects import Catalog
from fiona_common.settings import RedcapSyncSettings
from services.redcap_sync import autoid, coupling, metrics
from services.redcap_sync.identity import Identity
from services.redcap_sync.registry import (
    Route,
    StudyRecord,
    TransferState,
    record_result,
    reopened,
    request,
    rerequest,
    retry_due,
    transfer_id,
)
from services.redcap_sync.routes import (
    Candidate,
    StudyFacts,
    autoid_projects,
    read_facts,
    refusal,
    routing_candidates,
)
from services.redcap_sync.store import Registry, record_key

log = logging.getLogger(__name__)
KEPT_REFUSALS = 10


@dataclass
class SyncDeps:
    layouts: dict[str, Layout]
    catalog: Callable[[], Catalog]  # the projects file's current version
    identity: Identity
    registry: Registry
    autoid: KeyValue
    coupling: KeyValue
    settings: RedcapSyncSettings
    clock: Callable[[], datetime] = utc_now


async def on_study_complete(event: StudyComplete, deps: SyncDeps) -> None:
    """Register the study (or its new revision) and request the transfers its routes give."""
    facts = await _facts(deps, event.site, event.study_uid)
    candidates = await route(facts, deps)
    now = deps.clock()

    def change(record: StudyRecord | None) -> StudyRecord:
        record = describe(record, facts, deps.identity)
        if record.completed_at is None:
            record.revision, record.completed_at = event.revision, event.completed_at
        elif event.revision > record.revision:
            record.completed_at = event.completed_at
            reopened(record, event.revision, now)
        record.num_files = event.num_files
        apply(record, candidates, deps.catalog(), now)
        return record

    await deps.registry.update(record_key(event.site, event.study_uid), change)


async def reevaluate(deps: SyncDeps) -> int:
    """Try the routes again for unassigned studies (a coupling list or rule may have come)."""
    oldest = deps.clock() - timedelta(days=deps.settings.coupling_max_age_days)
    assigned = 0
    waiting = await deps.registry.unassigned_since(oldest)
    for key in waiting:
        assigned += int(await _reevaluate_one(deps, key))
    metrics.UNASSIGNED.set(len(waiting) - assigned)
    return assigned


async def _reevaluate_one(deps: SyncDeps, key: str) -> bool:
    record = await deps.registry.get(key)
    if record is None or record.assigned:
        return False
    candidates = await route(await _facts(deps, record.site, record.study_uid), deps)
    if not candidates:
        return False
    now = deps.clock()

    def change(current: StudyRecord | None) -> StudyRecord | None:
        if current is None or current.assigned:
            return None
        apply(current, candidates, deps.catalog(), now)
        return current

    updated = await deps.registry.update(key, change)
    return bool(updated and updated.assigned)


async def _facts(deps: SyncDeps, site: str, study_uid: str) -> StudyFacts:
    layout = deps.layouts.get(site)
    if layout is None:
        raise BadInput("unknown_site", f"no data directory for site {site}")
    facts = await asyncio.to_thread(read_facts, layout, site, study_uid)
    if facts is None:
        raise Unavailable("the study's series summaries are not written yet")
    return facts


async def route(facts: StudyFacts, deps: SyncDeps) -> list[Candidate]:
    """Every route that applies: coupling list, routing rules, AutoID (checked later)."""
    catalog, now = deps.catalog(), deps.clock()
    found = []
    keys = [coupling.study_key(facts.study_uid)]
    if facts.accession:
        keys.append(coupling.accession_key(deps.identity, facts.accession))
    max_age = timedelta(days=deps.settings.coupling_max_age_days)
    entry = await coupling.lookup(deps.coupling, keys, now, max_age)
    if entry is not None:
        found.append(Candidate(entry.project, entry.subject, entry.event, Route.COUPLING))
    found.extend(routing_candidates(facts, catalog))
    if facts.patient_id:
        patient_key = deps.identity.hash("patient_id", facts.patient_id)
        for project in autoid_projects(facts, catalog):
            if project.refuses(now.date()) is None:
                pseudonym = await autoid.pseudonym_for(
                    deps.autoid, project.name, project.participant_pattern, patient_key
                )
                found.append(Candidate(project.name, pseudonym, "", Route.AUTOID))
    return found


def describe(record: StudyRecord | None, facts: StudyFacts, identity: Identity) -> StudyRecord:
    """The record with what the study's summaries say (identifiers as keyed hashes)."""
    record = record or StudyRecord(site=facts.site, study_uid=facts.study_uid)
    record.description = facts.description
    record.study_date, record.study_time = facts.study_date, facts.study_time
    record.calling_aet, record.called_aet = facts.calling_aet, facts.called_aet
    record.patient_id_hash = (
        identity.hash("patient_id", facts.patient_id) if facts.patient_id else ""
    )
    record.patient_name_hash = (
        identity.hash("patient_name", facts.patient_name) if facts.patient_name else ""
    )
    record.accession_hash = identity.hash("accession", facts.accession) if facts.accession else ""
    record.series = facts.series
    return record


def apply(
    record: StudyRecord, candidates: list[Candidate], catalog: Catalog, now: datetime
) -> None:
    """Request a transfer per acceptable candidate; note why the others were refused."""
    for candidate in candidates:
        problem = refusal(candidate, catalog, now.date())
        if problem is not None:
            note = f"{candidate.route.value}: {problem}"
            record.refusals = [r for r in record.refusals if r != note][-KEPT_REFUSALS + 1 :] + [
                note
            ]
            log.info("route refused", extra={"route": candidate.route.value, "reason": problem})
            metrics.REFUSED.labels(candidate.route.value).inc()
            continue
        request(record, candidate.project, candidate.subject, candidate.event, candidate.route, now)


async def on_transfer_result(event: TransferResult, deps: SyncDeps) -> None:
    """Record the exporter's result; a failure to retry comes back (Later) when it is due."""
    settings = deps.settings
    now = deps.clock()
    recorded = [False]

    def change(record: StudyRecord | None) -> StudyRecord | None:
        if record is None:
            return None
        recorded[0] = changed = record_result(
            record,
            event.transfer_id,
            event.request_no,
            event.outcome.value,
            event.error,
            now,
            settings.max_attempts,
            timedelta(seconds=settings.retry_delay_seconds),
        )
        return record if retry_due(record, now) or changed else None

    record = await deps.registry.update(record_key(event.site, event.study_uid), change)
    if recorded[0]:  # not again when the same result comes back (redelivery, retry timer)
        metrics.RESULTS.labels(event.outcome.value).inc()
    transfer = record.transfers.get(event.transfer_id) if record else None
    if transfer and transfer.state is TransferState.FAILED and transfer.retry_at:
        raise Later(max(0.0, (transfer.retry_at - deps.clock()).total_seconds()))


async def assign(
    deps: SyncDeps, site: str, study_uid: str, project: str, subject: str, event: str = ""
) -> StudyRecord:
    """A user's assignment (``fiona assign``, the API): checked, then requested.

    The same assignment again requests the transfer again once it is delivered, failed or
    given up; while it is requested or in progress, it changes nothing.
    """
    checked_uid(study_uid, "study_uid")
    catalog, now = deps.catalog(), deps.clock()
    problem = refusal(Candidate(project, subject, event, Route.MANUAL), catalog, now.date())
    if problem:
        raise BadInput("refused", problem)
    key = record_key(site, study_uid)
    if await deps.registry.get(key) is None:
        raise BadInput("unknown_study", f"no complete study {study_uid} of site {site}")

    def change(record: StudyRecord | None) -> StudyRecord | None:
        if record is None:
            return None
        if request(record, project, subject, event, Route.MANUAL, now) is not None:
            return record
        # Assigned like this before: a user asking again re-requests it (unless in hand).
        ident = transfer_id(study_uid, project, subject, event)
        return record if rerequest(record, ident, now, "user") else None

    record = await deps.registry.update(key, change)
    if record is None:  # records are never deleted; this only satisfies the type checker
        raise BadInput("unknown_study", f"no complete study {study_uid} of site {site}")
    return record
