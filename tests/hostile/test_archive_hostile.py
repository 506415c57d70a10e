"""Focused regressions for what the receiver fuzzing found in ``services/receiver/archive.py``."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fiona_common.errors import BadInput
from fiona_common.upper_layer import decode_associate_rq
from services.receiver.archive import read_identity
from tests.hostile.wire import associate_rq


def _part10(path: Path, dataset: bytes) -> Path:
    meta_body = struct.pack("<HH2sH", 2, 0x10, b"UI", 20) + b"1.2.840.10008.1.2.1\0"
    meta = struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(meta_body)) + meta_body
    path.write_bytes(b"\0" * 128 + b"DICM" + meta + dataset)
    return path


def test_sequences_nested_too_deep_for_pydicom_are_bad_input_not_a_crash(tmp_path: Path) -> None:
    depth = 5_000
    opening = struct.pack("<HH2sHL", 0x0008, 0x0006, b"SQ", 0, 0xFFFFFFFF)
    opening += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    path = _part10(tmp_path / "deep.dcm", opening * depth + closing * depth)
    with pytest.raises(BadInput) as caught:
        read_identity(path)
    assert caught.value.code == "not_dicom"


def test_an_unknown_vr_in_an_identifying_element_is_bad_input(tmp_path: Path) -> None:
    dataset = struct.pack("<HH2sH", 0x0008, 0x0016, b"\x55\xd8", 4) + b"1.2\0"
    dataset += struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", 4) + b"1.3\0"
    path = _part10(tmp_path / "badvr.dcm", dataset)
    with pytest.raises(BadInput):
        read_identity(path)


def test_an_associate_request_with_lying_item_lengths_is_a_value_error() -> None:
    rq = bytearray(associate_rq())
    struct.pack_into(">H", rq, 76, 0xFFFF)  # the application context item's length
    with pytest.raises(ValueError):
        decode_associate_rq(bytes(rq))
