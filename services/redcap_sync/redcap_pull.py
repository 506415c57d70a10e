"""REDCap -> FIONA: projects and routing rules, coupling lists, AutoID mappings, and the transfer
requests people add in REDCap's Incoming project.

Runs every ``sync_seconds`` and on demand (``fiona redcap sync``). Each part fails on its own:
while REDCap is unreachable the last good copy stays in force (the snapshot file for projects
and rules; the key-value buckets for lists and mappings), and the next run catches up.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from fiona_common.clock import utc_now
from fiona_common.errors import ConfigError
from fiona_common.layout import DIR_MODE, is_valid_uid
from fiona_common.projects import Catalog
from services.redcap_sync import autoid, coupling, metrics
from services.redcap_sync.handlers import SyncDeps
from services.redcap_sync.redcap_api import Redcap, RedcapUnavailable, Row
from services.redcap_sync.redcap_catalog import Snapshot, load_snapshot, merge, read_snapshot, save
from services.redcap_sync.redcap_rows import instance_for, parse_redcap_time, scope
from services.redcap_sync.registry import (
    Route,
    StudyRecord,
    request,
    rerequest,
    transfer_id,
)
from services.redcap_sync.routes import Candidate, refusal
from services.redcap_sync.store import record_key

log = logging.getLogger(__name__)
REQUEST_FIELDS = [
    "study_instance_uid",
    "transfer_project_name",
    "transfer_name",
    "transfer_event_name",
    "transfer_date",
    "transfer_requested_date",
    "transfer_status",
]
OVERLAP = timedelta(
    minutes=10
)  # REDCap's modification times have minute precision and clocks drift


@dataclass
class RedcapPull:
    rc: Redcap
    sync: SyncDeps
    rows: KeyValue  # instance numbers (redcap_rows)
    state_dir: Path  # <DATADIR>/state/redcap: snapshot.json, projects.json
    admin_catalog: Callable[[], Catalog]  # the admin's projects file
    reload: Callable[[], object] = lambda: None  # make the services' catalog see a new merge
    requests_since: datetime | None = None

    async def pull_all(self) -> dict[str, str]:
        """Every part once; per part "ok" or why it failed (the others still ran)."""
        outcome = {}
        for what, step in (
            ("projects", self.pull_catalog),
            ("coupling", self.pull_coupling),
            ("autoid", self.pull_autoid),
            ("requests", self.pull_requests),
        ):
            try:
                await step()
            except (RedcapUnavailable, ConfigError) as err:
                metrics.REDCAP_FAILURES.labels(f"pull-{what}").inc()
                log.warning("REDCap pull failed", extra={"what": what, "error": str(err)})
                outcome[what] = str(err)
                continue
            metrics.REDCAP_LAST_SYNC.labels(what).set_to_current_time()
            outcome[what] = "ok"
        return outcome

    async def pull_catalog(self) -> None:
        try:
            snapshot = await self.rc.run(read_snapshot, self.rc)
        except RedcapUnavailable:
            self.rebuild()  # the admin's file may have changed: merge it with the last copy
            raise
        self.rebuild(snapshot)

    def rebuild(self, snapshot: Snapshot | None = None) -> list[str]:
        """Merge the admin's file with ``snapshot`` (None: the last good one); the warnings."""
        snapshot = snapshot or load_snapshot(self.state_dir) or Snapshot(read_at=utc_now())
        catalog, warnings = merge(self.admin_catalog(), snapshot)
        for warning in warnings:
            log.warning("REDCap row not used", extra={"problem": warning})
        self.state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        save(self.state_dir, snapshot, catalog)
        self.reload()
        return warnings

    async def pull_coupling(self) -> None:
        source = self.rc.get("coupling")
        if source is None:
            return
        rows = await self.rc.run(source.export)
        now, catalog = utc_now(), self.sync.catalog()
        max_age = timedelta(days=self.sync.settings.coupling_max_age_days)
        stored = refused = 0
        for row in rows:
            created = parse_redcap_time(row.get("cl_date")) or now
            if now - created > max_age or not row.get("cl_projectname"):
                continue
            entries, problem = coupling.entries_for(
                _coupling_row(row), catalog, self.sync.identity, created
            )
            refused += problem is not None
            for key, entry in entries:
                stored += await _put_if_changed(self.sync.coupling, key, entry.encode())
        if refused:
            log.warning("coupling list rows refused", extra={"rows": refused})
        if stored:
            log.info("coupling list entries from REDCap", extra={"entries": stored})

    async def pull_autoid(self) -> None:
        source = self.rc.get("autoid")
        if source is None:
            return
        changed = 0
        for row in await self.rc.run(source.export):
            project, key, value = (
                str(row.get(f) or "").strip()
                for f in ("autoid_project_name", "autoid_hash", "autoid_value")
            )
            if project and key and value:
                changed += await autoid.adopt(self.sync.autoid, project, key, value)
        if changed:
            log.info("AutoID mappings from REDCap", extra={"mappings": changed})

    async def pull_requests(self) -> None:
        """Transfers rows added (or re-dated) in REDCap become transfer requests here."""
        incoming = self.rc.need("incoming")
        started = utc_now()
        since = self.requests_since - OVERLAP if self.requests_since else None
        # REDCap compares dateRangeBegin with its own local time
        begin = since.astimezone().replace(tzinfo=None) if since else None
        # The filter is applied per row: ask for a transfers field, or only study rows come back.
        ids = await self.rc.run(
            incoming.record_ids,
            "study_instance_uid",
            ["transfer_project_name"],
            filter_logic="[transfer_project_name] <> ''",
            date_begin=begin,
        )
        rows = await self.rc.run(incoming.export_chunked, ids, fields=REQUEST_FIELDS)
        for row in rows:
            if (
                row.get("redcap_repeat_instrument") == "transfers"
                and row.get("transfer_project_name")
                and row.get("transfer_name")
            ):
                await self._take(row)
        self.requests_since = started

    async def _take(self, row: Row) -> None:
        uid = str(row.get("study_instance_uid") or "")
        project, subject, event = (
            str(row.get(f) or "").strip()
            for f in ("transfer_project_name", "transfer_name", "transfer_event_name")
        )
        found = await self._find(uid) if is_valid_uid(uid) else None
        if found is None:
            return  # not (yet) a complete study on this FIONA
        key, record = found
        ident = transfer_id(uid, project, subject, event)
        number = int(str(row.get("redcap_repeat_instance") or 0))
        where = scope("incoming", uid, "transfers")
        if number > 0:  # results go into this row
            await instance_for(self.rows, where, ident, {ident: number}, number)
        now = utc_now()
        problem = refusal(
            Candidate(project, subject, event, Route.REDCAP), self.sync.catalog(), now.date()
        )
        if problem:
            await self._refuse(row, number, problem)
            return
        asked = parse_redcap_time(row.get("transfer_requested_date"))
        done = parse_redcap_time(row.get("transfer_date"))

        def change(current: StudyRecord | None) -> StudyRecord | None:
            if current is None:
                return None
            transfer = current.transfers.get(ident)
            if transfer is None:
                if done is None or (asked is not None and asked > done):
                    request(current, project, subject, event, Route.REDCAP, now)
                    return current
                return None
            # Asked again after the last transfer, and after FIONA last touched this transfer
            # (its own rows carry its own times, to the minute).
            last = transfer.history[-1].at.replace(second=59, microsecond=999999)
            if asked is None or done is None or asked <= done or asked <= last:
                return None
            return current if rerequest(current, ident, now, "redcap") else None

        await self.sync.registry.update(key, change)

    async def _find(self, uid: str) -> tuple[str, StudyRecord] | None:
        for site in self.sync.layouts:
            key = record_key(site, uid)
            record = await self.sync.registry.get(key)
            if record is not None:
                return key, record
        return None

    async def _refuse(self, row: Row, number: int, problem: str) -> None:
        """Tell the person who asked, in the row itself (once)."""
        status = f"refused: {problem}"[:250]
        if number <= 0 or row.get("transfer_status") == status:
            return
        log.info("transfer request from REDCap refused", extra={"reason": problem})
        update = {
            "study_instance_uid": row["study_instance_uid"],
            "redcap_repeat_instrument": "transfers",
            "redcap_repeat_instance": number,
            "transfer_status": status,
            "transfer_error_message": problem,
        }
        await self.rc.run(self.rc.need("incoming").import_rows, [update])


def _coupling_row(row: Row) -> coupling.CouplingRow:
    return coupling.CouplingRow(
        accession=str(row.get("cl_accessionnumber") or ""),
        study_uid=str(row.get("cl_studyinstanceuid") or ""),
        project=str(row.get("cl_projectname") or ""),
        subject=str(row.get("cl_subjectid") or ""),
        event=str(row.get("cl_eventname") or ""),
    )


async def _put_if_changed(kv: KeyValue, key: str, value: bytes) -> int:
    try:
        if (await kv.get(key)).value == value:
            return 0
    except KeyNotFoundError:
        pass
    await kv.put(key, value)
    return 1
