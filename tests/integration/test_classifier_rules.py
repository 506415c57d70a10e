"""Rule files in the running classifier and in ``fiona classify``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom

from tests.builders import new_uid, write_series
from tests.fiona_process import REPO, Classifier, Receiver
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, store_scu


def rules_file(path: Path, type_name: str) -> Path:
    path.write_text(
        json.dumps([{"type": type_name, "rules": [{"tag": ["Modality"], "value": "^MR$"}]}])
    )
    return path


def types_of(datadir: Path, files: list[Path]) -> list[str]:
    ds = pydicom.dcmread(files[0])
    path = datadir / "site/raw" / ds.StudyInstanceUID / f"{ds.SeriesInstanceUID}.json"
    return json.loads(path.read_text())["ClassifyType"] if path.exists() else []


def test_changed_rule_file_applies_to_series_arriving_afterwards(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    rules = rules_file(tmp_path / "rules.json", "first-kind")
    extra = {"FIONA_CLASSIFIER__RULES_FILE": str(rules)}
    with Classifier(tmp_path / "cls", receiver.datadir, nats_server.url, extra) as cls:
        before = write_series(tmp_path / "a", 2, study_uid=new_uid())
        store_scu("127.0.0.1", receiver.port, before)
        wait_until(lambda: types_of(receiver.datadir, before) == ["first-kind"], what="rules 1")

        (tmp_path / "broken.json").write_text('[{"type": "x", "rules": [{"operator": "~~"}]}]')
        (tmp_path / "broken.json").replace(rules)
        wait_until(lambda: "rule file refused" in cls.log_text(), what="broken file refused")
        rules_file(tmp_path / "next.json", "second-kind").replace(rules)
        wait_until(lambda: "rule file reloaded" in cls.log_text(), what="new file loaded")
        after = write_series(tmp_path / "b", 2, study_uid=new_uid())
        store_scu("127.0.0.1", receiver.port, after)
        wait_until(lambda: types_of(receiver.datadir, after) == ["second-kind"], what="rules 2")
    assert types_of(receiver.datadir, before) == ["first-kind"]


def test_broken_rule_file_stops_start_up_naming_the_rule(tmp_path: Path) -> None:
    bad = tmp_path / "rules.json"
    bad.write_text(
        json.dumps(
            [
                {
                    "type": "T1",
                    "id": "MYT1",
                    "rules": [{"tag": ["EchoTime"], "operator": "<", "value": "short"}],
                }
            ]
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "fiona_cli", "run", "classifier"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "FIONA_CLASSIFIER__RULES_FILE": str(bad),
            "FIONA_DATADIR": str(tmp_path / "d"),
        },
        timeout=60,
    )
    assert result.returncode == 2
    assert "MYT1" in result.stderr and "Traceback" not in result.stderr


def test_fiona_classify_explains_which_rule_matched(tmp_path: Path) -> None:
    write_series(tmp_path / "series", 3, Manufacturer="SIEMENS")
    rules = rules_file(tmp_path / "rules.json", "any-mr")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fiona_cli",
            "classify",
            "--explain",
            "--rules",
            str(rules),
            str(tmp_path / "series"),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "3 files" in result.stdout and "any-mr" in result.stdout
    assert "MATCH" in result.stdout
