"""``fiona reprocess``: archived objects through the pipeline again (the original's ``s2m``).

For every object of the selected studies the receiver's "instance stored" event is published
again, built the way the receiver's start-up rescan builds it (``via`` ``reconcile``, received
at the file's modification time): the classifier rebuilds the object's links and its series
summary (classified with the current rules), the arrival service and everything after it see
instances they already know.

Idempotent twice over: the events carry the receiver's deterministic ``Nats-Msg-Id``, so
within JetStream's duplicate window (10 minutes) the server drops them; after it, every
consumer deduplicates (the classifier counts the links of a series, the arrival service the
hashes of the instances it has seen, redcap_sync keeps one transfer per study, project,
participant and event, and the exporter sends only what its ledger does not list as sent).
"""

import asyncio
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.js.errors import BucketNotFoundError, NoKeysError

from fiona_common.bus import NATS_DOWN, Bus, connect
from fiona_common.errors import BadInput, FionaError, Unavailable
from fiona_common.layout import Layout, checked_uid
from fiona_common.messages import InstanceStored, StoredVia
from fiona_common.nats_auth import NatsTarget, nats_target
from fiona_common.settings import Settings
from services.receiver.archive import read_identity
from services.receiver.ingest import Origin, stored_event
from services.receiver.reconcile import archived_since
from services.redcap_sync.registry import StudyRecord
from services.redcap_sync.store import RECORDS

# Who sent an object is not kept with the file: the event says so, as the receiver's rescan.
_ORIGIN = Origin(calling_aet="", called_aet="", peer_address="", via=StoredVia.RECONCILE)
_HASH = re.compile(r"[0-9a-f]{8,64}")
_CHUNK = 64  # publishes in flight at once

Study = tuple[str, str]  # (site, StudyInstanceUID)


@dataclass(frozen=True)
class Selection:
    """Which studies: all the given criteria must hold (UIDs, archived lately, patient)."""

    study_uids: tuple[str, ...] = ()
    since_days: float | None = None
    patient_hash: str | None = None  # the registry's keyed hash, or its first 8+ characters
    site: str | None = None

    def check(self) -> None:
        if not (self.study_uids or self.since_days is not None or self.patient_hash):
            raise FionaError("say which studies: STUDY_UID, --since DAYS or --patient-hash H")
        for uid in self.study_uids:
            checked_uid(uid, "study_uid")
        if self.since_days is not None and self.since_days <= 0:
            raise FionaError("--since takes a positive number of days")
        if self.patient_hash is not None and not _HASH.fullmatch(self.patient_hash):
            raise FionaError("--patient-hash takes 8 to 64 lower-case hex characters")


@dataclass
class Reprocessed:
    studies: list[Study] = field(default_factory=list)
    objects: int = 0
    published: int = 0  # stored by JetStream: consumers will see them
    duplicates: int = 0  # dropped by JetStream as resends within its duplicate window
    unreadable: int = 0  # archive files that are not readable DICOM (left alone)


def reprocess(
    settings: Settings, selection: Selection, nats: NatsTarget | str, dry_run: bool
) -> Reprocessed:
    """Publish the events of the selected studies again (``dry_run``: only count them)."""
    selection.check()
    layouts = {
        ls.name: Layout(ls.datadir)
        for ls in settings.listeners()
        if selection.site in (None, ls.name)
    }
    if not layouts:
        raise FionaError(f"no site {selection.site} is configured")
    return asyncio.run(_reprocess(layouts, selection, nats, dry_run))


async def _reprocess(
    layouts: dict[str, Layout], selection: Selection, nats: NatsTarget | str, dry_run: bool
) -> Reprocessed:
    async def quiet() -> None:  # closing at the end is no news for the admin
        pass

    needs_nats = selection.patient_hash is not None or not dry_run
    bus = await connect(nats, "fiona-reprocess", disconnected_cb=quiet) if needs_nats else None
    try:
        patients = None
        if bus is not None and selection.patient_hash is not None:
            patients = await studies_of_patient(bus, selection.patient_hash)
        report = Reprocessed(studies=select_studies(layouts, selection, patients, time.time()))
        for site, study_uid in report.studies:
            events = study_events(site, layouts[site], study_uid, report)
            report.objects += len(events)
            if bus is not None and not dry_run:
                await publish(bus, events, report)
        return report
    except NATS_DOWN as err:
        raise Unavailable(f"NATS at {nats}: {type(err).__name__}") from None
    finally:
        if bus is not None:
            await bus.close()


def select_studies(
    layouts: dict[str, Layout],
    selection: Selection,
    patients: set[Study] | None,
    now: float,
) -> list[Study]:
    """The archived studies (site, UID) the selection names, sorted."""
    if selection.study_uids:
        chosen = {
            (site, uid)
            for site, layout in layouts.items()
            for uid in selection.study_uids
            if layout.study_archive_dir(uid).is_dir()
        }
        missing = set(selection.study_uids) - {uid for _, uid in chosen}
        if missing:
            raise FionaError(f"study {sorted(missing)[0]} is not in the archive")
    else:
        chosen = {(site, uid) for site, layout in layouts.items() for uid in archived(layout)}
    if selection.since_days is not None:
        cutoff = now - selection.since_days * 86400
        recent = {
            (site, path.parent.name.removeprefix("scp_"))
            for site, layout in layouts.items()
            for path in archived_since(layout, cutoff)
        }
        chosen &= recent
    if patients is not None:
        chosen &= patients
    return sorted(chosen)


def archived(layout: Layout) -> list[str]:
    """Study UIDs with a folder in ``site/archive``."""
    try:
        names = os.listdir(layout.archive_dir)
    except FileNotFoundError:
        return []
    return [n.removeprefix("scp_") for n in names if n.startswith("scp_")]


async def studies_of_patient(bus: Bus, prefix: str) -> set[Study]:
    """Studies in the registry whose keyed patient hash starts with ``prefix``."""
    try:
        kv = await bus.js.key_value(RECORDS)
        keys = await kv.keys()
    except (BucketNotFoundError, NoKeysError):
        return set()
    found = set()
    for key in keys:
        entry = await kv.get(key)
        record = StudyRecord.decode(entry.value or b"{}")
        if record.patient_id_hash.startswith(prefix):
            found.add((record.site, record.study_uid))
    return found


def study_events(
    site: str, layout: Layout, study_uid: str, report: Reprocessed
) -> list[InstanceStored]:
    """The "instance stored" event of every readable object of one archived study."""
    events = []
    folder = layout.study_archive_dir(study_uid)
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            identity = read_identity(path)
        except BadInput:
            report.unreadable += 1
            continue
        stat = path.stat()
        received_at = datetime.fromtimestamp(stat.st_mtime, UTC)
        relative = layout.relative(path)
        events.append(stored_event(identity, site, relative, stat.st_size, _ORIGIN, received_at))
    return events


async def publish(bus: Bus, events: Iterable[InstanceStored], report: Reprocessed) -> None:
    """Publish and count what JetStream stored and what it dropped as a resend."""
    pending = list(events)
    for start in range(0, len(pending), _CHUNK):
        acks = await asyncio.gather(*(bus.publish(e) for e in pending[start : start + _CHUNK]))
        for ack in acks:
            if ack.duplicate:
                report.duplicates += 1
            else:
                report.published += 1


def run_reprocess(settings: Settings, selection: Selection, dry_run: bool) -> int:
    """``fiona reprocess``: do it and say what happened; exit code 0."""
    url = settings.nats_url or f"nats://127.0.0.1:{settings.local_nats_port}"
    report = reprocess(settings, selection, nats_target(settings, url), dry_run)
    if not report.studies:
        raise FionaError("no archived study matches")
    for site, study_uid in report.studies:
        print(f"{site} {study_uid}")
    what = f"{len(report.studies)} studies, {report.objects} objects"
    if dry_run:
        print(f"{what}: nothing published (--dry-run)")
    else:
        print(
            f"{what}: {report.published} events published, {report.duplicates} dropped by "
            "JetStream as resends within its duplicate window"
        )
    if report.unreadable:
        print(f"{report.unreadable} archive files are not readable DICOM and were skipped")
    return 0
