"""``fiona redcap bootstrap`` and ``fiona redcap check``: REDCap projects ready for FIONA.

Bootstrap imports FIONA's data dictionary (and its repeating instruments) into each configured
REDCap project that is still empty; a project that already has fields is never overwritten,
only reported. Check verifies, per project: the token works, the fields FIONA reads and writes
exist, the repeating instruments are set, and the token may import.
"""

from dataclasses import dataclass, field

from services.redcap_sync.dictionaries import Dictionary, for_role
from services.redcap_sync.redcap_api import Redcap, RedcapProject, RedcapUnavailable


@dataclass
class Finding:
    role: str
    ok: bool
    lines: list[str] = field(default_factory=list)


def bootstrap(rc: Redcap) -> list[Finding]:
    return [_bootstrap_one(project) for _, project in sorted(rc.projects.items())]


def _bootstrap_one(project: RedcapProject) -> Finding:
    wanted = for_role(project.role)
    found = Finding(project.role, True)
    try:
        present = [str(f["field_name"]) for f in project.metadata()]
        if len(present) > 1:  # a new REDCap project has only its record ID field
            missing = sorted(wanted.names() - set(present))
            found.ok = not missing
            found.lines.append(
                "has a data dictionary already; left as it is"
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
            return found
        rows = [f.metadata() for f in wanted.fields]
        count = project.call("metadata import", project.api.import_metadata, rows)
        project._metadata = None
        found.lines.append(f"data dictionary imported ({count} fields)")
        if wanted.repeating:
            _set_repeating(project, wanted)
            found.lines.append(f"repeating instruments: {', '.join(wanted.repeating)}")
    except RedcapUnavailable as err:
        found.ok = False
        found.lines.append(str(err))
    return found


def _set_repeating(project: RedcapProject, wanted: Dictionary) -> None:
    info = project.info()
    rows = [{"form_name": form, "custom_form_label": ""} for form in wanted.repeating]
    if _longitudinal(info):
        events = project.call("event export", project.api.export_events)
        first = str(events[0]["unique_event_name"])
        forms = sorted({f.form for f in wanted.fields})
        mapping = [{"arm_num": 1, "unique_event_name": first, "form": form} for form in forms]
        project.call("form-event import", project.api.import_instrument_event_mappings, mapping)
        rows = [{**row, "event_name": first} for row in rows]
    project.call(
        "repeating instruments import", project.api.import_repeating_instruments_events, rows
    )


def _longitudinal(info: dict[str, object]) -> bool:
    return str(info.get("is_longitudinal")) in ("1", "True", "true")


def check(rc: Redcap) -> list[Finding]:
    return [_check_one(project) for _, project in sorted(rc.projects.items())]


def _check_one(project: RedcapProject) -> Finding:
    wanted = for_role(project.role)
    found = Finding(project.role, True)
    try:
        info = project.info()
        found.lines.append(f"token works: project {info.get('project_title', '?')!r}")
        present = {str(f["field_name"]) for f in project.metadata()}
        missing = sorted(wanted.names() - present - {wanted.id_field})
        if missing:
            found.ok = False
            found.lines.append(f"missing fields: {', '.join(missing)}")
        else:
            found.lines.append(f"all {len(wanted.fields)} fields present")
        if wanted.repeating:
            rows = project.call(
                "repeating instruments export", project.api.export_repeating_instruments_events
            )
            unset = sorted(set(wanted.repeating) - {str(r.get("form_name")) for r in rows})
            if unset:
                found.ok = False
                found.lines.append(f"not repeating: {', '.join(unset)}")
        found.ok &= _may_import(project, found)
    except RedcapUnavailable as err:
        found.ok = False
        found.lines.append(str(err))
    return found


def _may_import(project: RedcapProject, found: Finding) -> bool:
    """An import of nothing: REDCap checks the token's right before it looks at the data, so
    "no data" means the right is there, "privileges" that it is not."""
    try:
        project.call("import check", project.api.import_records, [])
    except RedcapUnavailable as err:
        if "privilege" in str(err).lower() or "permission" in str(err).lower():
            found.lines.append(f"may not import: {err}")
            return False
        if "no data" not in str(err).lower():
            raise
    found.lines.append("may import")
    return True
