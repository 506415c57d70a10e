"""scripts/make_deid_table.py on a small stand-in for the standard's table (tests never read
the shared reference data)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_deid_table.py"

ANNEX_E = [
    {
        "name": "Accession Number",
        "tag": "(0008,0050)",
        "stdCompIOD": "Y",
        "basicProfile": "Z",
        "id": "00080050",
    },
    {
        "name": "Acquisition Date",
        "tag": "(0008,0022)",
        "stdCompIOD": "Y",
        "basicProfile": "X/Z",
        "rtnLongFullDatesOpt": "K",
        "rtnLongModifDatesOpt": "C",
        "id": "00080022",
    },
    {
        "name": "Overlay Data",
        "tag": "(60XX,3000)",
        "stdCompIOD": "Y",
        "basicProfile": "X",
        "cleanGraphOpt": "C",
        "id": "60xx3000",
    },
    {
        "name": "Private Attributes",
        "tag": "(GGGG,EEEE) WHERE GGGG IS ODD",
        "stdCompIOD": "N",
        "basicProfile": "X",
        "rtnSafePrivOpt": "C",
        "id": "ggggeeee-where-gggg-is-odd",
    },
]
FIONA_CSV = """group,tag,DICOM tag name,action,notes
0008,0020,StudyDate,incrementdate, CIM*
0010,0010,PatientName,always,Re-Mapped; CIM*
"""


def test_script_generates_table_with_edition_and_options(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_deid_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    annex, csv_file, out = tmp_path / "annex.json", tmp_path / "fiona.csv", tmp_path / "t.json"
    annex.write_text(json.dumps(ANNEX_E))
    csv_file.write_text(FIONA_CSV)
    argv = ["--annex-e", str(annex), "--fiona-csv", str(csv_file), "--edition", "2099x"]
    assert script.main([*argv, "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["edition"] == "2099x" and len(table["source_sha256"]) == 64
    rows = {row["tag"]: row for row in table["annex_e"]}
    assert rows["00080022"]["options"] == {
        "retain-long-full-dates": "K",
        "retain-long-modified-dates": "C",
    }
    assert rows["00080022"]["keyword"] == "AcquisitionDate"
    assert rows["60xx3000"]["options"] == {"clean-graphics": "C"}
    assert table["private_attributes"]["options"] == {"retain-safe-private": "C"}
    fiona = {row["tag"]: row for row in table["fiona"]}
    assert fiona["00080020"] == {
        "tag": "00080020",
        "name": "StudyDate",
        "action": "incrementdate",
        "value": "",
        "create": True,
    }
    assert fiona["00100010"]["value"] == "Re-Mapped"
