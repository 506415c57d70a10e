"""The outbox side of SFTP uploads: reproducible archives, receipts, the move to ``sent/``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.exporter.outbox_dir import (
    file_receipt,
    publish_package,
    sent_dir,
    study_dir,
    write_archive,
)

A, B = "sftp://fiona@a:22/in", "sftp://fiona@b:22/in"


def staged(folder: Path, **files: bytes) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / n for n in files]


def test_the_same_files_make_the_same_archive_byte_for_byte(tmp_path: Path) -> None:
    # An upload cut short is continued after a restart that packs the study again.
    first = staged(tmp_path / "1" / "2.25.7", **{"a.dcm": os.urandom(5000)})[0].parent
    zip_1 = write_archive(first).read_bytes()
    os.utime(first / "a.dcm", (1, 1))  # copied again later: another mtime
    assert write_archive(first).read_bytes() == zip_1


def test_package_moves_to_sent_once_every_uploader_confirmed_it(tmp_path: Path) -> None:
    outbox = tmp_path / "data" / "outbox"
    target = study_dir(outbox, "MEMO", "MEMO007", "baseline", "2.25.7")
    publish_package(staged(tmp_path / "s", **{"a.dcm": b"a"}), target, outbox, archive=True)
    receipt = {"sha256": "1" * 64, "remote": "in/MEMO/MEMO007/baseline/2.25.7.zip"}
    assert not file_receipt(target, outbox, A, receipt, {A, B})  # B has not confirmed yet
    assert target.is_dir()
    assert file_receipt(target, outbox, B, receipt, {A, B})
    sent = sent_dir(outbox) / "MEMO" / "MEMO007" / "baseline"
    assert sent_dir(outbox) == tmp_path / "data" / "sent"
    assert sorted(p.name for p in sent.iterdir()) == [
        "2.25.7",
        "2.25.7.receipt.json",
        "2.25.7.zip",
        "2.25.7.zip.sha256",
    ]
    assert not target.exists() and not target.with_name("2.25.7.zip").exists()
    filed = json.loads((sent / "2.25.7.receipt.json").read_text())
    assert set(filed["confirmed"]) == {A, B}


def test_an_outbox_destination_keeps_the_package_in_the_outbox(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    target = study_dir(outbox, "MEMO", "MEMO007", "", "2.25.7")
    publish_package(staged(tmp_path / "s", **{"a.dcm": b"a"}), target, outbox, archive=False)
    assert not file_receipt(target, outbox, A, {"sha256": "1" * 64}, {A, "outbox"})
    assert (target / "a.dcm").exists()


def test_a_study_sent_again_is_packed_with_what_went_before(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    target = study_dir(outbox, "MEMO", "MEMO007", "", "2.25.7")
    publish_package(staged(tmp_path / "1", **{"a.dcm": b"a"}), target, outbox, archive=True)
    assert file_receipt(target, outbox, A, {"sha256": "1" * 64}, {A})
    publish_package(staged(tmp_path / "2", **{"b.dcm": b"b"}), target, outbox, archive=True)
    assert sorted(p.name for p in target.iterdir()) == ["a.dcm", "b.dcm"]
    assert file_receipt(target, outbox, A, {"sha256": "2" * 64}, {A})
    sent = sent_dir(outbox) / target.relative_to(outbox)
    assert sorted(p.name for p in sent.iterdir()) == ["a.dcm", "b.dcm"]
    assert json.loads(sent.with_name("2.25.7.receipt.json").read_text())["confirmed"][A][
        "sha256"
    ] == ("2" * 64)
    assert not list((outbox / ".incoming").iterdir())
