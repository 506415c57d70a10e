"""Files dropped into inbox/ are imported like received objects."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pydicom

from tests.builders import dataset_bytes, write_series
from tests.fiona_process import Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer


def test_dicom_files_and_folders_are_imported_and_removed_from_the_inbox(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    files = write_series(tmp_path / "src" / "study", 6)
    inbox = receiver.datadir / "inbox"
    shutil.copytree(tmp_path / "src" / "study", inbox / "cd-import" / "series1")
    shutil.copy(files[0], inbox / "loose.dcm")  # a duplicate of one in the folder

    wait_until(lambda: len(receiver.archived()) == 6, what="imported files")
    wait_until(lambda: not any(p.is_file() for p in inbox.rglob("*")), what="inbox emptied")
    stored = {p.name.split(".", 1)[1]: p for p in receiver.archived()}
    for path in files:
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(stored[sop]) == dataset_bytes(path)
    wait_until(lambda: len(read_events(nats_server.url)) == 6, what="events")
    assert {e["via"] for e in read_events(nats_server.url)} == {"inbox"}


def test_non_dicom_file_goes_to_quarantine_with_a_reason(
    tmp_path: Path, receiver: Receiver
) -> None:
    inbox = receiver.datadir / "inbox"
    (inbox / "notes.txt").write_text("not an image")
    wait_until(lambda: not (inbox / "notes.txt").exists(), what="file taken")
    # The file moves first and its reason.json is written last (a complete folder has one).
    quarantined = receiver.datadir / "quarantine"
    wait_until(lambda: any(quarantined.rglob("reason.json")), what="reason written")
    [reason] = list(quarantined.rglob("reason.json"))
    assert json.loads(reason.read_text())["code"] == "not_dicom"
    assert (reason.parent / "notes.txt").read_text() == "not an image"
    assert receiver.metric("fiona_receiver_inbox_imports_total", outcome="quarantined") == 1


def test_a_file_still_being_written_is_not_imported_early(
    tmp_path: Path, receiver: Receiver
) -> None:
    [path] = write_series(tmp_path / "src", 1, rows=256, cols=256)
    data = path.read_bytes()
    target = receiver.datadir / "inbox" / "slow.dcm"
    with target.open("wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        deadline = time.monotonic() + 0.3  # shorter than the 0.5 s settle time of the fixture
        while time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.archived() == []
        f.write(data[len(data) // 2 :])
    wait_until(lambda: len(receiver.archived()) == 1, what="import after completion")
    assert dataset_bytes(receiver.archived()[0]) == dataset_bytes(path)
    assert list((receiver.datadir / "quarantine").rglob("reason.json")) == []
