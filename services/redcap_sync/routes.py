"""Which projects a complete study goes to: routing rules, the coupling list, AutoID.

:class:`StudyFacts` holds the patient's identifiers in clear, read from the series summaries on
local disk, in memory only while the routes are decided; what is stored keeps keyed hashes.
"""

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from fiona_common.layout import Layout
from fiona_common.projects import Catalog, Project
from services.redcap_sync.registry import Route, SeriesInfo


@dataclass(frozen=True)
class StudyFacts:
    site: str
    study_uid: str
    called_aet: str
    calling_aet: str
    patient_id: str
    patient_name: str
    accession: str
    description: str
    study_date: str
    study_time: str
    series: list[SeriesInfo]


@dataclass(frozen=True)
class Candidate:
    project: str
    subject: str
    event: str
    route: Route


UNKNOWN = "unknown"  # the classifier's IncomingConnection value for what it was not told


def read_facts(layout: Layout, site: str, study_uid: str) -> StudyFacts | None:
    """From ``site/raw/<Study>/<Series>.json`` (written by the classifier); None if absent."""
    folder = layout.raw_dir / study_uid
    summaries = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not summaries:
        return None

    def first(key: str) -> str:
        return next((str(s[key]) for s in summaries if s.get(key)), "")

    # The first series that knows how it came in (one imported from the inbox, or announced
    # again from the archive without its AE titles, does not).
    connections = [s.get("IncomingConnection") or {} for s in summaries]
    known = [c for c in connections if str(c.get("AETitleCalled", "")) not in ("", UNKNOWN)]
    connection: dict[str, Any] = (known or connections)[0]
    return StudyFacts(
        site=site,
        study_uid=study_uid,
        called_aet=str(connection.get("AETitleCalled", "")),
        calling_aet=str(connection.get("AETitleCaller", "")),
        patient_id=first("PatientID"),
        patient_name=first("PatientName"),
        accession=first("AccessionNumber"),
        description=first("StudyDescription"),
        study_date=first("StudyDate"),
        study_time=first("StudyTime"),
        series=[_series_info(s) for s in summaries],
    )


def _series_info(summary: dict[str, Any]) -> SeriesInfo:
    return SeriesInfo(
        series_uid=str(summary.get("SeriesInstanceUID", "")),
        description=str(summary.get("SeriesDescription", "")),
        modality=str(summary.get("Modality", "")),
        num_files=int(summary.get("NumFiles", 0) or 0),
        classify_types=list(summary.get("ClassifyType", [])),
    )


def routing_candidates(facts: StudyFacts, catalog: Catalog) -> list[Candidate]:
    """Active routing rules matching the sender and the patient (original populateIncoming)."""
    found = []
    for rule in catalog.routing:
        if not rule.active:
            continue
        if rule.called_aet and rule.called_aet.strip() != facts.called_aet.strip():
            continue
        if rule.calling_aet and rule.calling_aet.strip() != facts.calling_aet.strip():
            continue
        subject = None
        if rule.patient_id_regex and re.match(rule.patient_id_regex, facts.patient_id):
            subject = facts.patient_id
        elif rule.patient_name_regex and re.match(rule.patient_name_regex, facts.patient_name):
            subject = facts.patient_name
        elif not rule.patient_id_regex and not rule.patient_name_regex:
            subject = facts.patient_id
        if subject:
            found.append(Candidate(rule.project, subject, rule.event, Route.ROUTING))
    return found


def autoid_projects(facts: StudyFacts, catalog: Catalog) -> list[Project]:
    """Projects whose AutoID is triggered by the AE title this study was sent to."""
    return [
        p
        for p in catalog.projects
        if p.autoid.enabled and (p.autoid.called_aet or "").strip() == facts.called_aet.strip()
    ]


def refusal(candidate: Candidate, catalog: Catalog, today: date) -> str | None:
    """Why this candidate may not become a transfer request, or None."""
    project = catalog.by_name.get(candidate.project)
    if project is None:
        return f"unknown project {candidate.project}"
    return project.refuses(today) or project.refuses_subject(candidate.subject)


def summary_path(layout: Layout, study_uid: str) -> Path:
    return layout.raw_dir / study_uid
