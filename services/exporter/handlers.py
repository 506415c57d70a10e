"""A transfer request -> de-identified copies -> each destination -> ledger -> result event."""

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nats.js.kv import KeyValue

from fiona_common.bus import Bus
from fiona_common.clock import utc_now
from fiona_common.dicom_client import Tls
from fiona_common.errors import BadInput, ConfigError, Later
from fiona_common.layout import Layout
from fiona_common.messages import TransferOutcome, TransferRequested, TransferResult
from fiona_common.projects import Catalog, Destination, Project
from fiona_common.settings import ExporterSettings
from fiona_deid.settings import settings_from_project
from services.exporter import ledger, metrics, sftp
from services.exporter import sftp_package as sftp_job
from services.exporter.dicom_node import Node, Sent, count_study_instances, send_files
from services.exporter.ledger import ObjectEntry, Status
from services.exporter.outbox_dir import publish_study, study_dir
from services.exporter.selection import study_objects
from services.exporter.stage import Staged, stage

log = logging.getLogger(__name__)
LEDGER_CHUNK = 50
_STATUS = {Sent.OK: Status.SENT, Sent.TRANSIENT: Status.PENDING, Sent.PERMANENT: Status.REFUSED}


@dataclass
class ExporterDeps:
    layouts: dict[str, Layout]
    catalog: Callable[[], Catalog]
    key: bytes
    ledgers: KeyValue
    bus: Bus
    settings: ExporterSettings
    staging: Path
    outboxes: dict[str, Path]  # site -> its outbox folder
    clock: Callable[[], datetime] = utc_now
    # One per DICOM destination: limits the associations this process opens there at once.
    gates: dict[tuple[str, int, str], asyncio.Semaphore] = field(default_factory=dict)
    # One per rate-limited SFTP destination: the limit holds across concurrent uploads.
    buckets: dict[tuple[str, int], sftp.TokenBucket] = field(default_factory=dict)


class Permanent(Exception):
    """The request cannot succeed as it is (unknown project, bad settings...)."""


async def on_transfer_requested(request: TransferRequested, deps: ExporterDeps) -> None:
    started = time.monotonic()
    await deps.bus.publish(_result(request, TransferOutcome.STARTED))
    try:
        outcome, error, details = await deliver(request, deps)
    except Permanent as err:
        outcome, error, details = TransferOutcome.FAILED, str(err), {}
    details["seconds"] = round(time.monotonic() - started, 3)
    await deps.bus.publish(_result(request, outcome, error, details))
    metrics.TRANSFERS.labels(request.project, outcome.value).inc()
    metrics.DURATION.observe(time.monotonic() - started)
    if outcome is TransferOutcome.DELIVERED:
        if request.study_completed_at is not None:
            waited = (deps.clock() - request.study_completed_at).total_seconds()
            metrics.COMPLETE_TO_DELIVERED.observe(max(0.0, waited))
        shutil.rmtree(deps.staging / request.transfer_id, ignore_errors=True)
    metrics.STAGING_BYTES.set(await asyncio.to_thread(_size_of, deps.staging))


def _gate(deps: ExporterDeps, node: Node, destination: Destination) -> asyncio.Semaphore:
    """The limit of this process's associations to ``node``."""
    key = (node.host, node.port, node.aet)
    return deps.gates.setdefault(key, asyncio.Semaphore(destination.max_associations))


def node_of(destination: Destination, calling_aet: str) -> Node:
    tls = None
    if destination.tls:
        tls = Tls(destination.tls_ca_file, destination.tls_cert_file, destination.tls_key_file)
    return Node(
        destination.aet or "",
        destination.host or "",
        destination.port or 0,
        calling_aet,
        destination.max_bytes_per_second,
        tls,
    )


def _size_of(folder: Path) -> int:
    """Bytes under ``folder``; other requests' staging folders come and go meanwhile."""
    total = 0
    for root, _, names in os.walk(folder):  # os.walk skips folders that vanish
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _result(
    request: TransferRequested,
    outcome: TransferOutcome,
    error: str = "",
    details: dict[str, Any] | None = None,
) -> TransferResult:
    return TransferResult(
        transfer_id=request.transfer_id,
        request_no=request.request_no,
        site=request.site,
        study_uid=request.study_uid,
        outcome=outcome,
        error=error,
        details=details or {},
    )


async def deliver(
    request: TransferRequested, deps: ExporterDeps
) -> tuple[TransferOutcome, str, dict[str, Any]]:
    """Stage and send what the destinations have not confirmed; the result to report.

    A transient failure raises :class:`Later` (the request comes back after a growing delay)
    until ``max_attempts``, then the request fails with the reason.
    """
    project = _project(request, deps)
    layout = deps.layouts.get(request.site)
    if layout is None:
        raise BadInput("unknown_site", f"no data directory for site {request.site}")
    try:
        settings = settings_from_project(project)
    except ConfigError as err:
        raise Permanent(f"project {project.name}: {err}") from None
    objects = await asyncio.to_thread(study_objects, layout, request.study_uid)
    if not objects:
        raise Permanent("the study is no longer in the archive")
    ledgers = [
        await ledger.load(deps.ledgers, ledger.ledger_key(request.transfer_id, i))
        for i in range(len(project.destinations))
    ]
    todo = [o for o in objects if not all(lg.done(ledger.source_hash(o.sop_uid)) for lg in ledgers)]
    closed = [sftp_job.window_wait(d, deps.clock()) for d in project.destinations]
    if todo and all(closed):  # every destination waits for its upload window: stage later
        raise Later(min(closed))
    staged = Staged()
    sending: list[asyncio.Task[ledger.Ledger]] = []
    # Chunk by chunk: DICOM nodes receive earlier chunks (on up to max_associations at once)
    # while later ones are de-identified; an outbox gets the whole study after the last chunk.
    for start in range(0, len(todo), LEDGER_CHUNK):
        chunk = await asyncio.to_thread(
            stage,
            todo[start : start + LEDGER_CHUNK],
            deps.staging / request.transfer_id,
            settings,
            deps.key,
            request.participant,
            request.event,
            layout,
        )
        staged.add(chunk)
        for i, destination in enumerate(project.destinations):
            if destination.kind == "dicom":
                send = _to_destination(request, deps, i, destination, ledgers[i], chunk)
                sending.append(asyncio.create_task(send))
    try:
        await asyncio.gather(*sending)
    finally:
        for task in sending:
            task.cancel()  # only when one failed: the others stop too
    await _whole_study(request, deps, project, ledgers, staged)
    return await _verdict(request, deps, project, ledgers, staged, len(objects))


async def _whole_study(
    request: TransferRequested,
    deps: ExporterDeps,
    project: Project,
    ledgers: list[ledger.Ledger],
    staged: Staged,
) -> None:
    """Outbox and SFTP destinations get the whole study (an SFTP one uploads the outbox's);
    ``ledgers`` are brought up to date. :class:`Later` when an upload window is closed."""
    waits = []
    for i, destination in enumerate(project.destinations):
        key = ledger.ledger_key(request.transfer_id, i)
        ledgers[i] = await ledger.load(deps.ledgers, key)  # every chunk's entries, merged
        if destination.kind == "dicom":
            continue
        try:
            ledgers[i] = await _to_destination(request, deps, i, destination, ledgers[i], staged)
        except Later as later:  # outside its upload window; the others go now
            waits.append(later.seconds)
    if waits:
        raise Later(min(waits))


async def _verdict(
    request: TransferRequested,
    deps: ExporterDeps,
    project: Project,
    ledgers: list[ledger.Ledger],
    staged: Staged,
    objects: int,
) -> tuple[TransferOutcome, str, dict[str, Any]]:
    summary: dict[str, Any] = {"objects": objects}
    for i, result in enumerate(ledgers):
        summary[f"destination_{i}"] = sftp_job.counts(result)
        summary["mapped_study_uid"] = result.mapped_study_uid or staged.mapped_study_uid
    if any(lg.count(Status.PENDING) for lg in ledgers):
        return _retry_or_give_up(request, deps, ledgers, summary)
    refused = sum(lg.count(Status.REFUSED) for lg in ledgers)
    if refused:
        return TransferOutcome.FAILED, f"{refused} objects refused by a destination", summary
    if not any(lg.count(Status.SENT) for lg in ledgers):
        held = sum(lg.count(Status.HELD) for lg in ledgers)
        first = next(iter(staged.held.values()), "")
        return TransferOutcome.FAILED, f"nothing deliverable ({held} held back: {first})", summary
    problem = await _verify(project, deps, summary)
    if problem:
        return TransferOutcome.FAILED, problem, summary
    return TransferOutcome.DELIVERED, "", summary


def _project(request: TransferRequested, deps: ExporterDeps) -> Project:
    project = deps.catalog().by_name.get(request.project)
    if project is None:
        raise Permanent(f"no project {request.project} in the projects file")
    return project


def _retry_or_give_up(
    request: TransferRequested,
    deps: ExporterDeps,
    ledgers: list[ledger.Ledger],
    summary: dict[str, Any],
) -> tuple[TransferOutcome, str, dict[str, Any]]:
    attempts = 1 + max(
        (e.attempts for lg in ledgers for e in lg.objects.values() if e.status is Status.PENDING),
        default=0,
    )
    if attempts > deps.settings.max_attempts:
        return (
            TransferOutcome.FAILED,
            f"destination unreachable after {attempts - 1} tries",
            summary,
        )
    metrics.ATTEMPTS.inc()
    delay = min(deps.settings.retry_seconds * 2 ** (attempts - 1), deps.settings.max_retry_seconds)
    log.warning("delivery put off", extra={"attempt": attempts, "delay_seconds": delay})
    raise Later(delay)


async def _to_destination(
    request: TransferRequested,
    deps: ExporterDeps,
    index: int,
    destination: Destination,
    known: ledger.Ledger,
    staged: Staged,
) -> ledger.Ledger:
    """Deliver what this destination has not confirmed; the ledger afterwards."""
    key = ledger.ledger_key(request.transfer_id, index)
    now = deps.clock()
    held = {
        h: ObjectEntry(status=Status.HELD, at=now, note=why)
        for h, why in staged.held.items()
        if not known.done(h)
    }
    if held:
        known = await ledger.record(deps.ledgers, key, held, staged.mapped_study_uid)
        metrics.OBJECTS.labels(destination.kind, Status.HELD.value).inc(len(held))
    todo = {h: p for h, p in staged.files.items() if not known.done(h)}
    if not todo:
        return known
    if destination.kind == "outbox":
        return await _to_outbox(request, deps, key, todo, staged)
    if destination.kind == "sftp":
        return await _to_sftp(request, deps, key, destination, todo, staged, known)
    return await _to_node(deps, key, destination, todo, staged)


async def _to_outbox(
    request: TransferRequested, deps: ExporterDeps, key: str, todo: dict[str, Path], staged: Staged
) -> ledger.Ledger:
    outbox = deps.outboxes[request.site]
    target = study_dir(
        outbox, request.project, request.participant, request.event, staged.mapped_study_uid
    )
    await asyncio.to_thread(
        publish_study, list(todo.values()), target, outbox, deps.settings.outbox_archive
    )
    now = deps.clock()
    entries = {
        h: ObjectEntry(dest_sop_uid=staged.dest_sop[h], status=Status.SENT, attempts=1, at=now)
        for h in todo
    }
    metrics.OBJECTS.labels("outbox", Status.SENT.value).inc(len(entries))
    metrics.BYTES.labels("outbox").inc(sum(p.stat().st_size for p in todo.values()))
    return await ledger.record(deps.ledgers, key, entries, staged.mapped_study_uid)


async def _to_sftp(
    request: TransferRequested,
    deps: ExporterDeps,
    key: str,
    destination: Destination,
    todo: dict[str, Path],
    staged: Staged,
    known: ledger.Ledger,
) -> ledger.Ledger:
    """Pack the study into the outbox, upload it until confirmed, move it on to ``sent/``."""
    wait = sftp_job.window_wait(destination, deps.clock())
    if wait:
        raise Later(wait)
    outbox = deps.outboxes[request.site]
    target = study_dir(
        outbox, request.project, request.participant, request.event, staged.mapped_study_uid
    )
    job = sftp_job.Upload.of(destination, _project(request, deps), target, outbox)
    if any(n.startswith(sftp_job.PACKAGE) and not known.done(n) for n in known.objects):
        metrics.SFTP_RETRIES.labels("failure").inc()
    try:
        receipt = await asyncio.to_thread(
            sftp_job.deliver_study, job, list(todo.values()), job.server.bucket(deps.buckets)
        )
    except (sftp.Refused, ConfigError) as err:
        metrics.SFTP_UPLOADS.labels("failed").inc()
        raise Permanent(str(err)) from None
    except sftp_job.RETRY_LATER as err:
        metrics.SFTP_UPLOADS.labels("failed").inc()
        log.warning("sftp upload failed", extra={"destination": job.server.url, "reason": str(err)})
        entry = ObjectEntry(status=Status.PENDING, attempts=1, at=deps.clock(), note=str(err)[:300])
        return await ledger.record(deps.ledgers, key, {job.ledger_name: entry})
    now = deps.clock()
    entries = {
        h: ObjectEntry(dest_sop_uid=staged.dest_sop[h], status=Status.SENT, attempts=1, at=now)
        for h in todo
    }
    note = f"{receipt.remote}: {receipt.size_bytes} bytes, sha256 {receipt.sha256}"
    entries[job.ledger_name] = ObjectEntry(status=Status.SENT, attempts=1, at=now, note=note)
    metrics.SFTP_UPLOADS.labels("confirmed" if receipt.bytes_written else "already_there").inc()
    metrics.OBJECTS.labels("sftp", Status.SENT.value).inc(len(todo))
    metrics.BYTES.labels("sftp").inc(receipt.size_bytes)
    return await ledger.record(deps.ledgers, key, entries, staged.mapped_study_uid)


async def _to_node(
    deps: ExporterDeps, key: str, destination: Destination, todo: dict[str, Path], staged: Staged
) -> ledger.Ledger:
    node = node_of(destination, deps.settings.calling_aet)
    gate = _gate(deps, node, destination)
    by_path = {p: h for h, p in todo.items()}
    paths = list(todo.values())
    result = ledger.Ledger()
    # In chunks, each written to the ledger once confirmed: a crash re-sends one chunk at most.
    for start in range(0, len(paths), LEDGER_CHUNK):
        now, entries = deps.clock(), {}
        async with gate:  # at most max_associations of this process at this destination
            sent = await asyncio.to_thread(send_files, paths[start : start + LEDGER_CHUNK], node)
        for outcome in sent:
            h = by_path[outcome.path]
            status = _STATUS[outcome.sent]
            note = f"status 0x{outcome.status:04X}" if outcome.status is not None else "no answer"
            entries[h] = ObjectEntry(
                dest_sop_uid=staged.dest_sop[h], status=status, attempts=1, at=now, note=note
            )
            metrics.OBJECTS.labels("dicom", status.value).inc()
            if status is Status.SENT:
                metrics.BYTES.labels("dicom").inc(outcome.path.stat().st_size)
        result = await ledger.record(deps.ledgers, key, entries, staged.mapped_study_uid)
    return result


async def _verify(project: Project, deps: ExporterDeps, summary: dict[str, Any]) -> str | None:
    """C-FIND each DICOM destination for the study: as many instances as it confirmed?"""
    if not deps.settings.verify:
        return None
    study_uid = str(summary.get("mapped_study_uid", ""))
    for i, destination in enumerate(project.destinations):
        if destination.kind != "dicom" or not study_uid:
            continue
        node = node_of(destination, deps.settings.calling_aet)
        async with _gate(deps, node, destination):  # the query is one more association
            found = await asyncio.to_thread(count_study_instances, node, study_uid)
        sent = summary[f"destination_{i}"][Status.SENT.value]
        if found is None:
            summary[f"destination_{i}"]["verified"] = "no C-FIND"
        elif found != sent:
            return f"verification: {destination.aet} holds {found} of the {sent} objects sent"
        else:
            summary[f"destination_{i}"]["verified"] = found
    return None
