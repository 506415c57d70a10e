"""Generate libs/fiona_deid/profile_table.json, the de-identification tables FIONA ships.

Run once when the standard's table changes (the output is committed; tests and the engine never
read the sources):

    .venv/bin/python scripts/make_deid_table.py \\
        --annex-e ../shared/reference/data/dicom/ps3.15-annex-e-confidentiality-profile.json \\
        --fiona-csv ../shared/reference/data/dicom/fiona-published-tag-actions.csv \\
        --edition 2025

Inputs:
- PS3.15 Annex E Table E.1-1 as data (innolitics/dicom-standard's
  ``confidentiality_profile_attributes.json``): basic-profile action and each option's action.
- The original FIONA's published tag-action list (FionaDocs ``sorted-dicom-tags.csv``), the source
  of the FIONA-compatible preset.
"""

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

from pydicom.datadict import keyword_for_tag

OUT = Path(__file__).resolve().parent.parent / "libs" / "fiona_deid" / "profile_table.json"

# Annex E column key -> FIONA option name (docs/deid.md lists them).
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retain-safe-private",
    "rtnUIDsOpt": "retain-uids",
    "rtnDevIdOpt": "retain-device-identity",
    "rtnInstIdOpt": "retain-institution-identity",
    "rtnPatCharsOpt": "retain-patient-characteristics",
    "rtnLongFullDatesOpt": "retain-long-full-dates",
    "rtnLongModifDatesOpt": "retain-long-modified-dates",
    "cleanDescOpt": "clean-descriptors",
    "cleanStructContOpt": "clean-structured-content",
    "cleanGraphOpt": "clean-graphics",
}
PRIVATE_ROW_ID = "ggggeeee-where-gggg-is-odd"


def annex_e_rows(raw: list[dict[str, str]]) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Table rows keyed by 8-digit tag (``x`` for repeating-group digits) and the private row."""
    rows: list[dict[str, object]] = []
    private: dict[str, object] = {}
    for entry in raw:
        options = {name: entry[col] for col, name in OPTION_COLUMNS.items() if col in entry}
        row: dict[str, object] = {
            "basic": entry["basicProfile"],
            "options": options,
            "in_std_iod": entry["stdCompIOD"] == "Y",
            "name": entry["name"],
        }
        if entry["id"] == PRIVATE_ROW_ID:
            private = row
            continue
        tag = entry["id"].lower()
        if len(tag) != 8:
            sys.exit(f"unexpected tag id {entry['id']!r}")
        row["tag"] = tag
        row["keyword"] = "" if "x" in tag else keyword_for_tag(int(tag, 16))
        rows.append(row)
    rows.sort(key=lambda r: str(r["tag"]))
    if not private:
        sys.exit("the Annex E file has no private-attributes row")
    return rows, private


def fiona_rows(lines: list[list[str]]) -> list[dict[str, object]]:
    """The original's rules: tag, action, fixed value and create-if-missing flag."""
    rows: dict[str, dict[str, object]] = {}
    for fields in lines:
        if len(fields) < 4 or fields[0] == "group":
            continue
        group, element, name, action = (f.strip() for f in fields[:4])
        notes = ",".join(fields[4:]).strip()
        create = "CIM*" in action or "CIM*" in notes
        action = action.replace("CIM*", "").strip(" ,;")
        value = notes.replace("CIM*", "").strip(" ,;")
        tag = f"{group}{element}".lower()
        rows[tag] = {"tag": tag, "name": name, "action": action, "value": value, "create": create}
    return [rows[t] for t in sorted(rows)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annex-e", type=Path, required=True)
    parser.add_argument("--fiona-csv", type=Path, required=True)
    parser.add_argument("--edition", required=True, help="edition of PS3.15 the table came from")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    annex_bytes = args.annex_e.read_bytes()
    rows, private = annex_e_rows(json.loads(annex_bytes))
    with args.fiona_csv.open(newline="") as handle:
        fiona = fiona_rows(list(csv.reader(handle)))
    table = {
        "edition": args.edition,
        "source": args.annex_e.name,
        "source_sha256": hashlib.sha256(annex_bytes).hexdigest(),
        "fiona_source": args.fiona_csv.name,
        "generated_by": "scripts/make_deid_table.py",
        "annex_e": rows,
        "private_attributes": private,
        "fiona": fiona,
    }
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{args.out}: {len(rows)} Annex E rows + private row, {len(fiona)} FIONA rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
