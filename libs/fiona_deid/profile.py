"""What a project's settings do, for people: the effective table and the per-object plan.

Both are computed from the same compiled rules the engine applies, so the list users are
promised cannot drift from the code.
"""

import copy
from dataclasses import dataclass

from pydicom.dataset import Dataset

from fiona_deid.engine import deidentify
from fiona_deid.records import AuditEntry, Outcome
from fiona_deid.settings import DeidSettings, Preset
from fiona_deid.table import PSEUDONYM_STAMPS, annex_e_action, load_tables

_WHAT_IF_KEY = b"what-if: throwaway key, never used for output"
_MEANINGS = {
    "X": "remove",
    "Z": "empty",
    "D": "dummy value",
    "K": "keep",
    "C": "clean",
    "U": "replace UID",
    "hash": "SHA-256 digest",
    "hashuid": "unsalted UID digest",
    "set": "set",
    "bodypart": "keep known body part, else BODYPART",
}


@dataclass(frozen=True)
class TableRow:
    tag: str
    name: str
    action: str
    meaning: str
    source: str


def effective_table(settings: DeidSettings) -> list[TableRow]:
    """Every rule the settings apply, tag order, then the pseudonym stamps."""
    tables = load_tables()
    rows: list[TableRow] = []
    if settings.preset is Preset.FIONA:
        for entry in tables.fiona:
            rows.append(_fiona_row(entry))
    else:
        options = settings.effective_options
        for row in tables.annex_e:
            action, source = annex_e_action(row, options)
            rows.append(TableRow(_tag_text(row.tag), row.name, action, _meaning(action), source))
        action, source = annex_e_action(tables.private_row, options)
        meaning = "keep if on the safe-private list, else remove" if action == "C" else "remove"
        rows.append(TableRow("(gggg,eeee) odd gggg", "Private Attributes", action, meaning, source))
    return _with_stamps(rows)


def _with_stamps(rows: list[TableRow]) -> list[TableRow]:
    """The pseudonymization wins over the table for the elements it writes."""
    stamps = {_tag_text(f"{tag:08x}"): what for tag, what in PSEUDONYM_STAMPS.items()}
    merged = []
    for row in rows:
        what = stamps.pop(row.tag, None)
        if what is None:
            merged.append(row)
        else:
            meaning = f"{what} (table: {row.action})"
            merged.append(TableRow(row.tag, row.name, "set", meaning, "pseudonym"))
    merged += [TableRow(tag, "", "set", what, "pseudonym") for tag, what in stamps.items()]
    return sorted(merged, key=lambda r: r.tag)


def _fiona_row(entry: dict[str, str]) -> TableRow:
    action = entry["action"]
    meaning = {
        "remove": "remove",
        "keep": "keep",
        "empty": "empty",
        "incrementdate": "shift date",
        "incrementdatetime": "shift date of date-time",
        "hashuid+PROJECTNAME": "FIONA project UID (1.3.6.1.4.1.45037.)",
        "hashuid": "unsalted UID digest",
        "hash": "SHA-256 digest",
        "process": "walk the sequence",
    }.get(action, f"set {entry['value']}".strip())
    return TableRow(_tag_text(entry["tag"]), entry["name"], action, meaning, "fiona")


def _meaning(action: str) -> str:
    if "/" in action:
        letters = [_MEANINGS.get(a.rstrip("*"), a) for a in action.split("/")]
        return f"{letters[0]}, or {' / '.join(letters[1:])} where the IOD requires it"
    return _MEANINGS.get(action, action)


def _tag_text(tag: str) -> str:
    return f"({tag[:4].upper()},{tag[4:].upper()})".replace("X", "x")


@dataclass(frozen=True)
class Plan:
    outcome: Outcome
    reason: str
    actions: list[AuditEntry]


def plan(ds: Dataset, settings: DeidSettings, subject: str = "SUBJECT", event: str = "") -> Plan:
    """What de-identifying ``ds`` would do to each attribute (``--what-if``); ``ds`` unchanged.

    Runs the real engine on a copy with a throwaway key: the plan is what would happen.
    """
    result = deidentify(copy.deepcopy(ds), settings, _WHAT_IF_KEY, subject, event)
    return Plan(result.outcome, result.reason, result.audit)
