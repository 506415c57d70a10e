"""The coupling list (original CouplingList): AccessionNumber or StudyInstanceUID -> project,
participant ID, event. Imported from CSV; entries expire after ``coupling_max_age_days``.

CSV columns (header row, any order): ``accession_number``, ``study_instance_uid`` (one of the
two per row), ``project``, ``participant_id``, ``event`` (optional). Accession numbers are kept
only as keyed hashes.
"""

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from fiona_common.layout import is_valid_uid
from fiona_common.projects import Catalog
from services.redcap_sync.identity import Identity

BUCKET = "fiona_coupling"
COLUMNS = ("accession_number", "study_instance_uid", "project", "participant_id", "event")


class CouplingEntry(BaseModel):
    project: str
    subject: str
    event: str = ""
    created_at: datetime

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def accession_key(identity: Identity, accession: str) -> str:
    return f"acc.{identity.hash('accession', accession)[:40]}"


def study_key(study_uid: str) -> str:
    return f"uid.{study_uid}"


def parse_csv(
    text: str, catalog: Catalog, identity: Identity, now: datetime
) -> tuple[list[tuple[str, CouplingEntry]], list[str]]:
    """Rows as (key, entry), and one message per refused row naming its line."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"project", "participant_id"} - set(reader.fieldnames or ())
    if missing:
        return [], [f"line 1: missing column(s) {', '.join(sorted(missing))}"]
    good, bad = [], []
    for row in reader:
        entries, problem = entries_for(
            CouplingRow(
                accession=row.get("accession_number") or "",
                study_uid=row.get("study_instance_uid") or "",
                project=row.get("project") or "",
                subject=row.get("participant_id") or "",
                event=row.get("event") or "",
            ),
            catalog,
            identity,
            now,
        )
        if problem:
            bad.append(f"line {reader.line_num}: {problem}")
        good += entries
    return good, bad


@dataclass(frozen=True)
class CouplingRow:
    """One row of a coupling list, from a CSV file or from REDCap's CouplingList."""

    accession: str
    study_uid: str
    project: str
    subject: str
    event: str


def entries_for(
    row: CouplingRow, catalog: Catalog, identity: Identity, created_at: datetime
) -> tuple[list[tuple[str, CouplingEntry]], str | None]:
    """The row's key-value entries (one per accession number / study UID), or why it is bad."""
    accession, uid, subject = row.accession.strip(), row.study_uid.strip(), row.subject.strip()
    project = catalog.by_name.get(row.project.strip())
    problem = None
    if not accession and not uid:
        problem = "needs accession_number or study_instance_uid"
    elif uid and not is_valid_uid(uid):
        problem = "study_instance_uid is not a valid UID"
    elif project is None:
        problem = f"unknown project {row.project!r}"
    else:
        problem = project.refuses_subject(subject)
    if problem or project is None:
        return [], problem
    entry = CouplingEntry(
        project=project.name, subject=subject, event=row.event.strip(), created_at=created_at
    )
    keys = ([accession_key(identity, accession)] if accession else []) + (
        [study_key(uid)] if uid else []
    )
    return [(key, entry) for key in keys], None


async def lookup(
    kv: KeyValue, keys: list[str], now: datetime, max_age: timedelta
) -> CouplingEntry | None:
    """The first unexpired entry under ``keys`` (study UID before accession number)."""
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        found = CouplingEntry.model_validate_json(entry.value or b"{}")
        if now - found.created_at <= max_age:
            return found
    return None
