"""Housekeeping (``fiona janitor``; entry points in :mod:`fiona_ops.janitor_service`).

A round, per data disk (the data directories of SITES projects on one file system are one):

1. Leftovers in which nothing changed for ``STAGING_MAX_AGE_DAYS`` go: the exporter's staging
   folders (a delivered transfer's are removed by the exporter at once) and ``outbox/.incoming``.
2. Above ``HIGH_WATER_PERCENT`` used, studies go, oldest first, until the disk is expected below
   ``LOW_WATER_PERCENT``: only studies older than ``MIN_AGE_DAYS`` whose every transfer is
   delivered. One with a pending or failed transfer, without any transfer (unassigned) or
   without a registry record goes only with ``--force``.
3. Stale entries of ``raw/``, ``participants/``, ``srs/`` go (:class:`Sweep`).

Deleting a study (:meth:`Round.delete`): a tombstone in ``fiona_purged``, then its registry
record (only if unchanged since it was read: otherwise it is kept and looked at next round), its
``fiona_unassigned`` entry and its delivery ledgers, so that FIONA never sends it again; then
its files, the archive last: staging, its ``sent/`` deliveries (never ``outbox/``), ``srs/``,
``.arrived`` markers, ``raw/<Study>``, participant links to it, ``archive/scp_<Study>``. A
deletion interrupted after the tombstone is finished in the next round (reason ``resumed``).
Each deletion is one log line (study hash, size, reason) and counted; never a PatientID.
"""

import asyncio
import contextlib
import logging
import os
from collections import Counter as Tally
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from prometheus_client import Counter, Gauge

from fiona_common.bus import Bus
from fiona_common.layout import Layout
from fiona_common.logs import short_hash
from fiona_common.settings import Settings
from fiona_ops.janitor_files import (
    StudyOnDisk,
    Sweep,
    Usage,
    disk_usage,
    leftovers,
    paths_bytes,
    remove_path,
    studies_on_disk,
    study_files,
)
from fiona_ops.janitor_registry import RegistryView, Tombstone
from services.exporter.outbox_dir import sent_dir, study_dir
from services.redcap_sync.registry import StudyRecord, TransferState

log = logging.getLogger(__name__)

DELETED = Counter(
    "fiona_janitor_deleted_studies_total", "Studies deleted to free disk space", ["reason"]
)
FREED = Counter("fiona_janitor_freed_bytes_total", "Bytes freed by deleting studies and leftovers")
REMOVED = Counter(
    "fiona_janitor_removed_total",
    "Leftovers and stale entries removed (staging, stale_link, orphan_summary, empty_folder)",
    ["kind"],
)
USED_RATIO = Gauge("fiona_janitor_disk_used_ratio", "Used share of the data disk", ["site"])


class Standing(StrEnum):
    """What the registry says about a study on disk."""

    DELIVERED = "delivered"  # every transfer delivered
    PENDING = "pending"  # a transfer requested or in progress
    FAILED = "failed"  # a transfer failed or given up, none pending
    UNASSIGNED = "unassigned"  # a record without any transfer
    UNREGISTERED = "unregistered"  # no record (still arriving, or never complete)
    PURGED = "purged"  # deleted before, not completely: finished now


class Reason(StrEnum):
    DELIVERED = "delivered"
    FORCED = "forced"
    RESUMED = "resumed"


@dataclass(frozen=True)
class Study:
    site: str
    study_uid: str
    size_bytes: int
    last_change: datetime  # its completion (registry) or newest archive file, the later
    standing: Standing


@dataclass(frozen=True)
class Policy:
    high_water: float  # used share above which studies are deleted ...
    low_water: float  # ... until the expected share is below this one
    min_age: timedelta
    force: bool = False

    @classmethod
    def of(cls, settings: Settings, force: bool) -> "Policy":
        j = settings.janitor
        age = timedelta(days=j.min_age_days)
        return cls(j.high_water_percent / 100, j.low_water_percent / 100, age, force)


@dataclass(frozen=True)
class Deletion:
    study: Study
    reason: Reason


@dataclass(frozen=True)
class Plan:
    sites: list[str]
    usage: Usage
    deletions: list[Deletion]
    kept: dict[Standing, int]  # passed over: old enough, but not deletable (without --force)

    @property
    def expected(self) -> Usage:
        return self.usage.without(sum(d.study.size_bytes for d in self.deletions))


def standing_of(
    record: StudyRecord | None, purged_at: datetime | None, newest: datetime
) -> Standing:
    """A study's standing; a tombstone counts only if nothing arrived after it (a resend)."""
    if record is None:
        purged = purged_at is not None and newest <= purged_at
        return Standing.PURGED if purged else Standing.UNREGISTERED
    states = {t.state for t in record.transfers.values()}
    if not states:
        return Standing.UNASSIGNED
    if states & {TransferState.REQUESTED, TransferState.IN_PROGRESS}:
        return Standing.PENDING
    if states & {TransferState.FAILED, TransferState.GIVEN_UP}:
        return Standing.FAILED
    return Standing.DELIVERED


def deletion_reason(standing: Standing, force: bool) -> Reason | None:
    """Why a study old enough may be deleted; None: it may not."""
    if standing is Standing.DELIVERED:
        return Reason.DELIVERED
    if standing is Standing.PURGED:
        return Reason.RESUMED
    return Reason.FORCED if force else None


def plan_deletions(
    sites: list[str], usage: Usage, studies: list[Study], policy: Policy, now: datetime
) -> Plan:
    """The studies to delete, oldest first, until ``usage`` is expected below low water.

    Nothing while usage is not above high water. A study younger than the minimum age is never
    chosen; one that may not be deleted is counted in ``kept`` and passed over.
    """
    if usage.ratio <= policy.high_water:
        return Plan(sites, usage, [], {})
    target = policy.low_water * usage.size_bytes
    used = usage.used_bytes
    deletions: list[Deletion] = []
    kept: Tally[Standing] = Tally()
    for study in sorted(studies, key=lambda s: (s.last_change, s.study_uid)):
        if used < target or now - study.last_change < policy.min_age:
            break  # below low water, or every study from here on is too young
        reason = deletion_reason(study.standing, policy.force)
        if reason is None:
            kept[study.standing] += 1
            continue
        deletions.append(Deletion(study, reason))
        used -= study.size_bytes
    return Plan(sites, usage, deletions, dict(kept))


# --------------------------------------------------------------------------- one round


@dataclass(frozen=True)
class Site:
    name: str
    layout: Layout


@dataclass
class Candidate:
    """A study old enough to be deleted, with what deleting it involves."""

    study: Study
    layout: Layout
    revision: int | None  # of its registry record (None: no record)
    transfers: dict[str, str] = field(default_factory=dict)  # id -> "project: state"
    deliveries: list[Path] = field(default_factory=list)  # staging and sent/ copies
    ledger_keys: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.study.site}.{self.study.study_uid}"


@dataclass
class Report:
    dry_run: bool
    now: datetime
    plans: list[Plan] = field(default_factory=list)
    deleted: list[Deletion] = field(default_factory=list)
    changed: int = 0  # planned, but its record changed meanwhile: kept
    leftovers: int = 0
    leftover_bytes: int = 0
    sweep: Tally[str] = field(default_factory=Tally)
    used: dict[str, float] = field(default_factory=dict)  # site -> used share afterwards


@dataclass
class Round:
    settings: Settings
    view: RegistryView
    policy: Policy
    dry_run: bool
    now: datetime
    report: Report

    @property
    def staging(self) -> Path:
        return self.settings.exporter.staging_dir or self.settings.datadir / "state" / "staging"

    async def run(self) -> Report:
        await asyncio.to_thread(self.remove_leftovers)
        for sites in volumes(self.settings):
            await self.free_space(sites)
        for site in sites_of(self.settings):
            gone = frozenset(
                d.study.study_uid for d in self.report.deleted if d.study.site == site.name
            )
            await asyncio.to_thread(self.sweep, site, gone)
        return self.report

    def remove_leftovers(self) -> None:
        max_age = self.settings.janitor.staging_max_age_days * 86400
        roots = [
            self.staging,
            *(s.layout.outbox_dir / ".incoming" for s in sites_of(self.settings)),
        ]
        for root in roots:
            for path in leftovers(root, self.now.timestamp(), max_age):
                size = paths_bytes([path])
                self.report.leftovers += 1
                self.report.leftover_bytes += size
                if self.dry_run:
                    continue
                remove_path(path)
                REMOVED.labels("staging").inc()
                FREED.inc(size)
                log.info("leftover removed", extra={"folder": path.name, "size_bytes": size})

    async def free_space(self, sites: list[Site]) -> None:
        usage = disk_usage(sites[0].layout.datadir)
        if self.dry_run:  # as it will be once the leftovers are gone
            usage = usage.without(self.report.leftover_bytes)
        names = [s.name for s in sites]
        if usage.ratio <= self.policy.high_water:
            self.report.plans.append(Plan(names, usage, [], {}))
        else:
            found = {(c.study.site, c.study.study_uid): c for c in await self.candidates(sites)}
            plan = plan_deletions(
                names, usage, [c.study for c in found.values()], self.policy, self.now
            )
            self.report.plans.append(plan)
            for deletion in [] if self.dry_run else plan.deletions:
                await self.delete(
                    found[deletion.study.site, deletion.study.study_uid], deletion.reason
                )
            usage = disk_usage(sites[0].layout.datadir)
        for name in names:
            USED_RATIO.labels(name).set(usage.ratio)
            self.report.used[name] = usage.ratio

    async def candidates(self, sites: list[Site]) -> list[Candidate]:
        ledger_keys = await self.view.ledger_keys()
        found = []
        for site in sites:
            for on_disk in await asyncio.to_thread(studies_on_disk, site.layout):
                if self.now - _utc(on_disk.newest_mtime) >= self.policy.min_age:
                    found.append(await self.candidate(site, on_disk, ledger_keys))
        return found

    async def candidate(
        self, site: Site, on_disk: StudyOnDisk, ledger_keys: dict[str, list[str]]
    ) -> Candidate:
        record, revision = await self.view.record(f"{site.name}.{on_disk.study_uid}")
        tomb = None if record else await self.view.tombstone(f"{site.name}.{on_disk.study_uid}")
        newest = _utc(on_disk.newest_mtime)
        standing = standing_of(record, tomb.purged_at if tomb else None, newest)
        completed = record.completed_at if record and record.completed_at else newest
        study = Study(
            site.name, on_disk.study_uid, on_disk.size_bytes, max(newest, completed), standing
        )
        found = Candidate(study, site.layout, revision)
        if deletion_reason(standing, self.policy.force) is None:
            return found  # kept anyway: what deleting it involves does not matter
        if record is not None:
            found.transfers = {i: f"{t.project}: {t.state}" for i, t in record.transfers.items()}
            found.ledger_keys = [k for i in record.transfers for k in ledger_keys.get(i, [])]
            found.deliveries = await self.deliveries(site, record, ledger_keys)
        elif tomb is not None:  # only what is ours: the bucket is not trusted with rm -rf
            roots = [self.staging, site.layout.outbox_dir, sent_dir(site.layout.outbox_dir)]
            found.deliveries = [p for p in map(Path, tomb.paths) if _under(p, roots)]
        size = on_disk.size_bytes + paths_bytes(found.deliveries)
        found.study = Study(site.name, study.study_uid, size, study.last_change, standing)
        return found

    async def deliveries(
        self, site: Site, record: StudyRecord, ledger_keys: dict[str, list[str]]
    ) -> list[Path]:
        """Staging folders and the ``sent/`` deliveries of ``record``'s transfers."""
        outbox = site.layout.outbox_dir
        paths = [self.staging / ident for ident in record.transfers]
        for ident, transfer in record.transfers.items():
            for key in ledger_keys.get(ident, []):
                mapped = await self.view.mapped_study_uid(key)
                if not mapped:
                    continue
                target = study_dir(
                    outbox, transfer.project, transfer.subject, transfer.event, mapped
                )
                # Only the copy in sent/ (confirmed at the remote end): a study in outbox/ is
                # a delivery someone collects from there, and theirs to remove.
                base = sent_dir(outbox) / target.relative_to(outbox)
                paths += [base, *(base.with_name(base.name + x) for x in _PACKAGE_FILES)]
        return list(dict.fromkeys(paths))

    async def delete(self, found: Candidate, reason: Reason) -> None:
        study = found.study
        tomb = Tombstone(
            purged_at=self.now,
            reason=reason.value,
            size_bytes=study.size_bytes,
            transfers=found.transfers,
            paths=[str(p) for p in found.deliveries],
        )
        if reason is not Reason.RESUMED:
            if not await self.view.forget(found.key, found.revision, tomb, found.ledger_keys):
                self.report.changed += 1
                log.info(
                    "study changed meanwhile, kept", extra={"study": short_hash(study.study_uid)}
                )
                return
        for path in [*found.deliveries, *study_files(found.layout, study.study_uid)]:
            await asyncio.to_thread(remove_path, path)
        DELETED.labels(reason.value).inc()
        FREED.inc(study.size_bytes)
        self.report.deleted.append(Deletion(study, reason))
        log.info(
            "study deleted",
            extra={
                "study": short_hash(study.study_uid),
                "site": study.site,
                "size_bytes": study.size_bytes,
                "reason": reason.value,
                "standing": study.standing.value,
                "age_days": round((self.now - study.last_change).total_seconds() / 86400, 1),
            },
        )

    def sweep(self, site: Site, gone: frozenset[str]) -> None:
        sweep = Sweep(self.now.timestamp(), gone, self.dry_run)
        sweep.tree(site.layout.raw_dir, summaries=True)
        sweep.tree(site.layout.participants_dir)
        sweep.tree(site.layout.srs_dir)
        counts = {
            "stale_link": sweep.links,
            "orphan_summary": sweep.summaries,
            "empty_folder": sweep.folders,
        }
        self.report.sweep.update(counts)
        if self.dry_run or not any(counts.values()):
            return
        for kind, count in counts.items():
            REMOVED.labels(kind).inc(count)
        log.info("stale entries removed", extra={"site": site.name, **counts})


_PACKAGE_FILES = (".zip", ".zip.sha256", ".receipt.json")


def sites_of(settings: Settings) -> list[Site]:
    return [Site(ls.name, Layout(ls.datadir)) for ls in settings.listeners()]


def volumes(settings: Settings) -> list[list[Site]]:
    """The sites grouped by the file system of their data directory (missing ones left out)."""
    groups: dict[int, list[Site]] = {}
    for site in sites_of(settings):
        with contextlib.suppress(FileNotFoundError):
            groups.setdefault(os.stat(site.layout.datadir).st_dev, []).append(site)
    return list(groups.values())


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _under(path: Path, roots: list[Path]) -> bool:
    normal = Path(os.path.normpath(path))
    return any(normal != root and normal.is_relative_to(root) for root in roots)


async def run_round(settings: Settings, bus: Bus, *, force: bool, dry_run: bool) -> Report:
    """One round of housekeeping (with ``dry_run``: the plan, nothing changed)."""
    view = await RegistryView.open(bus)
    now = datetime.now(UTC)
    policy = Policy.of(settings, force)
    return await Round(settings, view, policy, dry_run, now, Report(dry_run, now)).run()
