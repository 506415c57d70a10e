"""Files: pydicom's test files in every transfer syntax stay readable (pydicom and DCMTK);
the command line; the generated table."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import pydicom
import pydicom.data
import pytest

from fiona_deid.cli import main
from fiona_deid.files import deidentify_file
from fiona_deid.records import Outcome
from fiona_deid.settings import (
    DateOffset,
    Option,
    Policy,
    build_settings,
    settings_from_project,
)
from fiona_deid.table import load_tables
from tests.deid.dicom_builders import KEY, make_mr

DCMDUMP = shutil.which("dcmdump")
PASS_ALL = replace(
    build_settings("PROJ1", "recommended"),
    burned_in=Policy.PASS,
    secondary_capture=Policy.PASS,
    presentation_state=Policy.PASS,
)


@functools.cache
def one_file_per_transfer_syntax() -> dict[str, Path]:
    """The files installed with pydicom (no downloads), one per transfer syntax."""
    found: dict[str, Path] = {}
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, KeyError):
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID") if "file_meta" in dir(ds) else None
        if syntax and "SOPInstanceUID" in ds and "SOPClassUID" in ds:
            found.setdefault(str(syntax), path)
    return found


def test_every_transfer_syntax_is_covered() -> None:
    assert len(one_file_per_transfer_syntax()) >= 12


@pytest.mark.skipif(DCMDUMP is None, reason="DCMTK dcmdump not installed")
@pytest.mark.parametrize("syntax", sorted(one_file_per_transfer_syntax()))
def test_shipped_file_deidentified_stays_readable(syntax: str, tmp_path: Path) -> None:
    source = one_file_per_transfer_syntax()[syntax]
    result, written = deidentify_file(source, tmp_path, PASS_ALL, KEY, "SUBJ01", "baseline")
    assert result.outcome is Outcome.EMITTED, result.reason
    assert written is not None
    dump = subprocess.run([str(DCMDUMP), "-q", str(written)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    assert "E: " not in dump.stderr
    out = pydicom.dcmread(written)
    original = pydicom.dcmread(source)
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID != original.SOPInstanceUID
    if "PixelData" in original:
        assert out.PixelData == original.PixelData  # byte for byte, never decompressed
    assert out.PatientIdentityRemoved == "YES"


def test_cli_deidentifies_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in"
    source.mkdir()
    make_mr().save_as(source / "a.dcm", enforce_file_format=True)
    (source / "junk.txt").write_text("not dicom")
    key = tmp_path / "key"
    key.write_bytes(KEY)
    projects = tmp_path / "projects.json"
    projects.write_text(json.dumps({"projects": [_project("MEMO", "recommended")]}))
    argv = ["--project", "MEMO", "--projects", str(projects), "--key-file", str(key)]
    code = main(
        [*argv, "--subject", "MEMO001", "--event", "baseline", str(source), str(tmp_path / "out")]
    )
    outputs = list((tmp_path / "out").rglob("*.dcm"))
    assert code == 1  # the text file is quarantined as unreadable
    assert len(outputs) == 1
    out = pydicom.dcmread(outputs[0])
    assert out.PatientID == "MEMO001" and out.InstitutionName == "MEMO"
    assert "1 emitted" in capsys.readouterr().out


def test_cli_what_if_prints_plan_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.dcm"
    make_mr().save_as(path, enforce_file_format=True)
    before = path.read_bytes()
    assert main(["--profile", "basic", "--what-if", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "emitted" in printed
    assert "(0008,1070)" in printed and "OperatorsName" in printed and "removed" in printed
    assert "Doe" not in printed
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_cli_list_profile_is_the_effective_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "recommended", "--list-profile", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_tag = {row["tag"]: row for row in rows}
    assert by_tag["(0008,0020)"]["action"] == "C"  # Study Date under modified dates
    assert by_tag["(0008,0020)"]["source"] == "retain-long-modified-dates"
    assert by_tag["(0010,0010)"]["source"] == "pseudonym"
    assert by_tag["(0008,0080)"]["meaning"].endswith("(table: X/Z/D)")
    assert by_tag["(0008,1010)"]["action"] == "K"  # Station Name: retain device identity
    assert len(rows) > 600


def test_cli_refuses_unknown_option_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "basic", "--option", "retain-everything", "--list-profile"]) == 2
    assert "retain-everything" in capsys.readouterr().err


def test_generated_table_records_its_edition_and_has_every_row() -> None:
    tables = load_tables()
    assert tables.edition.startswith("20")
    assert len(tables.annex_e) >= 600
    actions = {row.basic for row in tables.annex_e}
    assert {"X", "Z", "D", "U", "X/Z", "Z/D", "X/D", "X/Z/D", "X/Z/U*"} <= actions
    assert tables.private_row.options == {"retain-safe-private": "C"}


def _project(name: str, profile: str) -> dict[str, object]:
    return {
        "name": name,
        "participant_pattern": "^MEMO[0-9]{3}$",
        "deidentification": {"profile": profile, "options": [], "date_shift_days": 42},
        "features": {"drop_presentation_states": True},
        "destinations": [{"kind": "outbox"}],
    }


def test_cli_writes_audit_lines(tmp_path: Path) -> None:
    source = tmp_path / "a.dcm"
    make_mr().save_as(source, enforce_file_format=True)
    key = tmp_path / "key"
    key.write_bytes(KEY)
    audit = tmp_path / "audit.jsonl"
    argv = ["--profile", "basic", "--key-file", str(key), "--audit", str(audit)]
    assert main([*argv, "--subject", "S1", str(source), str(tmp_path / "out")]) == 0
    record = json.loads(audit.read_text().splitlines()[0])
    assert record["outcome"] == "emitted"
    done = {(e["keyword"], e["done"]) for e in record["elements"]}
    assert ("OperatorsName", "removed") in done and ("PatientID", "replaced") in done
    assert "Doe" not in audit.read_text()


def test_settings_from_a_catalog_project() -> None:
    parse_catalog = _catalog_parser()

    entry = _project("MEMO", "basic")
    entry["deidentification"] = {
        "profile": "basic",
        "options": ["retain-long-modified-dates", "date-offset-participant"],
        "date_shift_days": 7,
    }
    entry["header_rewrite"] = {"tag": "SeriesDescription", "regex": "^(.*) MEMO$"}
    project = parse_catalog(json.dumps({"projects": [entry]})).by_name["MEMO"]
    settings = settings_from_project(project)
    assert settings.project == "MEMO"
    assert settings.effective_options == {Option.RETAIN_LONG_MODIFIED_DATES}
    assert settings.date_offset is DateOffset.PARTICIPANT
    assert settings.presentation_state is Policy.DROP
    assert settings.header_rewrite is not None and settings.header_rewrite.tag == 0x0008103E


def _catalog_parser():  # type: ignore[no-untyped-def]
    """The project catalog's parser (it is moving from services.redcap_sync to fiona_common)."""
    try:
        from fiona_common.projects import parse_catalog  # type: ignore[import-not-found]
    except ImportError:
        from services.redcap_sync.projects import parse_catalog  # type: ignore[import-not-found]
    return parse_catalog
