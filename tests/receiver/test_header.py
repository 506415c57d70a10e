"""The fast header scan agrees with pydicom, or declines."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from services.receiver.header import DatasetHead, scan_identity
from tests.builders import canonical_testdata_files, dataset_bytes, mr_dataset, write_part10

KEYWORDS = ["SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID"]


def head_of(path: Path) -> DatasetHead:
    syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    return DatasetHead(dataset_bytes(path)[:16384], syntax)


def test_scan_matches_pydicom_for_every_transfer_syntax_it_accepts(tmp_path: Path) -> None:
    answered = 0
    for path in canonical_testdata_files(tmp_path).values():
        found = scan_identity(head_of(path))
        if found is None:
            continue
        answered += 1
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in KEYWORDS:
            assert found.get(keyword) == (str(ds[keyword].value) if keyword in ds else None)
    assert answered >= 8  # all little-endian syntaxes; deflated and big endian go to pydicom


def test_missing_tags_are_absent_not_guessed(tmp_path: Path) -> None:
    path = write_part10(mr_dataset(StudyInstanceUID=None, Modality=None), tmp_path / "a.dcm")
    found = scan_identity(head_of(path))
    assert found is not None
    assert "StudyInstanceUID" not in found and "Modality" not in found


def test_undefined_length_sequence_before_the_uids_is_left_to_pydicom(tmp_path: Path) -> None:
    ds = mr_dataset()
    ds.ReferencedImageSequence = [pydicom.Dataset()]
    ds["ReferencedImageSequence"].is_undefined_length = True
    path = write_part10(ds, tmp_path / "a.dcm")
    assert scan_identity(head_of(path)) is None


@pytest.mark.parametrize("cut", [0, 7, 100])
def test_truncated_head_is_declined(tmp_path: Path, cut: int) -> None:
    head = head_of(write_part10(mr_dataset(), tmp_path / "a.dcm"))
    assert scan_identity(DatasetHead(head.data[:cut], head.transfer_syntax_uid)) is None


def test_garbage_is_declined() -> None:
    assert (
        scan_identity(
            DatasetHead(b"\x08\x00\x16\x00\x01\x02" + b"\xff" * 50, "1.2.840.10008.1.2.1")
        )
        is None
    )
