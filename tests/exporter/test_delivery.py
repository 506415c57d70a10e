"""Delivery pieces without a network: statuses, rate limit, outbox folders."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from services.exporter import dicom_node, outbox_dir
from services.exporter.dicom_node import Sent, classify_status
from services.exporter.outbox_dir import publish_study, study_dir


@pytest.mark.parametrize(
    ("status", "sent"),
    [
        (0x0000, Sent.OK),
        (0xB000, Sent.OK),  # coercion of data elements: stored
        (0xA700, Sent.TRANSIENT),  # out of resources
        (0xA900, Sent.PERMANENT),  # dataset does not match SOP class
        (0x0122, Sent.PERMANENT),  # SOP class not supported
        (0xC000, Sent.PERMANENT),
    ],
)
def test_statuses_say_whether_to_retry(status: int, sent: Sent) -> None:
    assert classify_status(status) is sent


def test_rate_limit_waits_for_the_bytes_already_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(dicom_node.time, "sleep", slept.append)
    started = time.monotonic()
    dicom_node._keep_rate(1_000_000, 2_000_000, started)  # 2 MB at 1 MB/s: ~2 s ahead
    dicom_node._keep_rate(None, 2_000_000, started)  # no limit: no wait
    assert len(slept) == 1 and 1.9 < slept[0] <= 2.0


def files(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(name.encode())
    return [folder / n for n in names]


def test_a_resend_adds_to_the_study_folder_and_the_archive_matches_its_checksum(
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "outbox"
    target = study_dir(outbox, "MEMO", "MEMO001", "", "2.25.1")
    assert target == outbox / "MEMO" / "MEMO001" / "_" / "2.25.1"
    publish_study(files(tmp_path / "s1", "a.dcm", "b.dcm"), target, outbox, archive=False)
    publish_study(files(tmp_path / "s2", "c.dcm"), target, outbox, archive=True)
    assert sorted(p.name for p in target.iterdir()) == ["a.dcm", "b.dcm", "c.dcm"]
    archive = target.with_name("2.25.1.zip")
    line = target.with_name("2.25.1.zip.sha256").read_text()
    assert line == f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  2.25.1.zip\n"
    assert list((outbox / ".incoming").iterdir()) == []


def test_outbox_files_are_on_disk_before_the_study_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = tmp_path / "outbox"
    target = study_dir(outbox, "MEMO", "MEMO001", "", "2.25.1")
    synced: list[tuple[str, bool]] = []  # (file name, whether the study was visible yet)
    real = outbox_dir.fsync_file

    def recorded(path: Path) -> None:
        synced.append((path.name, target.exists()))
        real(path)

    monkeypatch.setattr(outbox_dir, "fsync_file", recorded)
    publish_study(files(tmp_path / "s1", "a.dcm", "b.dcm"), target, outbox, archive=True)
    assert synced[:2] == [("a.dcm", False), ("b.dcm", False)]
    assert {name for name, _ in synced[2:]} == {".2.25.1.zip.tmp", "2.25.1.zip.sha256"}


def test_hostile_path_parts_stay_inside_the_outbox(tmp_path: Path) -> None:
    target = study_dir(tmp_path, "..", "../../etc", ".hidden", "2.25.1")
    assert target.resolve().is_relative_to(tmp_path.resolve())


def test_staging_size_ignores_folders_that_vanish(tmp_path: Path) -> None:
    # Regression: another request's staging folder, removed during the walk, failed a request
    # that had already reported its result, so it was handled (and reported) twice.
    from services.exporter.handlers import _size_of

    files(tmp_path / "staging" / "a", "x.dcm", "yy.dcm")
    assert _size_of(tmp_path / "staging") == len("x.dcm") + len("yy.dcm")
    assert _size_of(tmp_path / "gone") == 0
