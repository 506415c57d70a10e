"""Projects and routing rules from REDCap (DataTransferProjects, Routing), merged with the file.

REDCap says which projects exist, whether they are active and approved, how participants are
named, AutoID, features and routing rules. It knows nothing of destinations or
de-identification profiles: those come from the projects file, from the project's own entry
there or else from its ``defaults``. The REDCap rows last read are kept in
``state/redcap/snapshot.json`` (the last good copy used while REDCap is unreachable) and the
merged catalog in ``state/redcap/projects.json``, which every service reads.
"""

import json
import logging
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from fiona_common.clock import utc_now
from fiona_common.layout import FILE_MODE, write_atomic
from fiona_common.projects import (
    Catalog,
    Destination,
    Project,
    RoutingRule,
    parse_catalog,
)
from services.redcap_sync.redcap_api import Redcap, RedcapProject, Row

log = logging.getLogger(__name__)


class Snapshot(BaseModel):
    """The REDCap rows the catalog was last built from."""

    read_at: datetime
    projects: list[Row] = Field(default_factory=list)
    routing: list[Row] = Field(default_factory=list)
    routing_labels: dict[str, str] = Field(default_factory=dict)  # dropdown code -> project


def read_snapshot(rc: Redcap) -> Snapshot | None:
    """The rows of the projects and routing projects; None if neither is configured."""
    projects, routing = rc.get("projects"), rc.get("routing")
    if projects is None and routing is None:
        return None
    snapshot = Snapshot(read_at=utc_now())
    if projects is not None:
        snapshot.projects = [r for r in projects.export() if r.get("project_name")]
    if routing is not None:
        snapshot.routing = routing.export()
        snapshot.routing_labels = _choice_labels(routing, "routing_dest_project")
    return snapshot


def _choice_labels(project: RedcapProject, field: str) -> dict[str, str]:
    """A dropdown's codes and labels (the original used the label as the project name)."""
    for row in project.metadata():
        if row.get("field_name") == field and row.get("select_choices_or_calculations"):
            pairs = [c.split(",", 1) for c in row["select_choices_or_calculations"].split("|")]
            return {
                code.strip(): label.strip() for code, label in (p for p in pairs if len(p) == 2)
            }
    return {}


def merge(base: Catalog, snapshot: Snapshot) -> tuple[Catalog, list[str]]:
    """The catalog services use, and one warning per REDCap row that could not be used."""
    warnings: list[str] = []
    from_redcap: dict[str, Project] = {}
    for row in snapshot.projects:
        project = _project(row, base, warnings)
        if project is not None:
            from_redcap[project.name] = project
    projects = [p for p in base.projects if p.name not in from_redcap] + list(from_redcap.values())
    names = {p.name for p in projects}
    routing = list(base.routing)
    for row in snapshot.routing:
        rule = _rule(row, snapshot.routing_labels, warnings)
        if rule is not None and rule.project not in names:
            warnings.append(f"routing {row.get('record_id')}: no project {rule.project!r}")
        elif rule is not None:
            routing.append(rule)
    return Catalog(projects=projects, routing=routing, defaults=base.defaults), warnings


def _project(row: Row, base: Catalog, warnings: list[str]) -> Project | None:
    name = str(row["project_name"]).strip()
    local = base.by_name.get(name)
    destinations: list[Destination] = list(local.destinations) if local else []
    if not destinations and base.defaults is not None:
        destinations = list(base.defaults.destinations)
    if not destinations:
        warnings.append(f"project {name}: no destination (projects file entry or defaults)")
        return None
    deid = local.deidentification if local else None
    if deid is None and base.defaults is not None:
        deid = base.defaults.deidentification
    fields: dict[str, Any] = {
        "name": name,
        "active": row.get("project_active") == "1",
        "approval_start": _date(row.get("project_rec_start_date")),
        "approval_end": _date(row.get("project_rec_end_date")),
        "participant_pattern": str(row.get("project_patient_naming") or "").strip()
        or (local.participant_pattern if local else ".+"),
        "autoid": {
            "enabled": row.get("project_use_autoid") == "1",
            "called_aet": str(row.get("project_autoid_aetitle") or "").strip() or None,
        },
        "features": {
            "drop_presentation_states": row.get("project_features___0") == "1",
            "never_mask_burned_in": row.get("project_features___1") == "1",
            "drop_secondary_captures": row.get("project_features___2") == "1",
        },
        "destinations": destinations,
    }
    if deid is not None:
        fields["deidentification"] = deid
    tag, regex = row.get("project_import_rule_1_tag"), row.get("project_import_rule_1_regexp")
    if tag and regex:
        fields["header_rewrite"] = {"tag": tag, "regex": regex}
    try:
        return Project.model_validate(fields)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(x) for x in problem["loc"])
        warnings.append(f"project {name}: {where}: {problem['msg']}")
        return None


def _rule(row: Row, labels: dict[str, str], warnings: list[str]) -> RoutingRule | None:
    if row.get("routing_active") != "1":
        return None
    code = str(row.get("routing_dest_project") or "").strip()
    try:
        return RoutingRule(
            description=f"REDCap routing {row.get('record_id', '')}",
            called_aet=row.get("routing_incoming_aetitle") or None,
            calling_aet=row.get("routing_sending_aetitle") or None,
            patient_id_regex=row.get("routing_allowed_patientid") or None,
            patient_name_regex=row.get("routing_allowed_patientname") or None,
            project=labels.get(code, code),
            event=row.get("routing_event_name") or "",
        )
    except ValidationError as err:
        warnings.append(f"routing {row.get('record_id')}: {err.errors()[0]['msg']}")
        return None


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def snapshot_path(state_dir: Path) -> Path:
    return state_dir / "snapshot.json"


def load_snapshot(state_dir: Path) -> Snapshot | None:
    try:
        return Snapshot.model_validate_json(snapshot_path(state_dir).read_bytes())
    except (OSError, ValidationError):
        return None


def save(state_dir: Path, snapshot: Snapshot, catalog: Catalog) -> None:
    """The snapshot, then the merged catalog (checked as the services will read it)."""
    text = json.dumps(catalog.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
    parse_catalog(text, "merged projects")  # never hand the services a file they refuse
    write_atomic(snapshot_path(state_dir), snapshot.model_dump_json().encode(), FILE_MODE)
    merged = state_dir / "projects.json"
    if not merged.exists() or merged.read_text() != text:
        write_atomic(merged, text.encode(), FILE_MODE)
        log.info("projects from REDCap merged", extra={"projects": len(catalog.projects)})
