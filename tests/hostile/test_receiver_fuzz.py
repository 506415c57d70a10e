"""The receiver against hostile peers: malformed PDUs, and hostile datasets in valid associations.

One receiver process serves every case. After each case it must still be alive, it must have
answered (an A-ABORT, an A-ASSOCIATE-RJ, an error status, or closing the connection; never
silence: reads time out after ``ANSWER_TIMEOUT``), what it refused must be in quarantine with a
``reason.json``, and a normal C-ECHO and C-STORE from a new association must succeed.
"""

from __future__ import annotations

import json
import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pynetdicom.dsutils import encode

from tests.builders import mr_dataset
from tests.fiona_process import Receiver
from tests.hostile.conftest import FUZZ_CASES, fuzz_settings
from tests.hostile.wire import (
    VERIFICATION,
    RawPeer,
    assert_still_serving,
    associate_rq,
    command,
    pdata,
)
from tests.peers import NatsServer

PDU_TYPES = {0x02, 0x03, 0x04, 0x06, 0x07}
SUCCESS = {0x0000, 0xB000, 0xB006, 0xB007}
UID_PATH = re.compile(r"scp_[0-9.]{1,64}/[A-Za-z0-9]{1,16}\.[0-9.]{1,64}")
# Refused as UIDs (they never become paths). Not here: components with a leading zero such as
# "1.02.3", invalid by PS3.5 9.1 but accepted on purpose (digits and dots, CONTRACT section 4;
# such UIDs occur in real scanners' data and are safe as paths).
HOSTILE_UIDS = [
    "../../x",
    "1.2.3/../../../../tmp/fiona-fuzz",
    "..",
    "/etc/passwd",
    "1." + "2" * 68,  # 70 characters
    "",
    " ",
    "1..2",
    ".1.2",
    "1.2.",
    "a.b.c",
    "1.2.3\\4.5",
    "1.2\x00.3",
]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    root = tmp_path_factory.mktemp("fuzz-receiver")
    with NatsServer(root / "nats") as nats_server:
        extra = {"FIONA_RECEIVER__IDLE_TIMEOUT_SECONDS": "5"}
        with Receiver(root / "rx", root / "data", nats_server.url, extra) as rx:
            yield rx
            # A traceback in the log is an exception nothing handled (the association then
            # ends without an answer); the hypothesis cases above list what provoked it.
            unhandled = [line for line in rx.log_text().splitlines() if "thread failed" in line]
            assert not unhandled, "\n".join(unhandled[:5])


# ------------------------------------------------------------------------------ health


def reasons(rx: Receiver) -> list[Path]:
    return sorted((rx.datadir / "quarantine").rglob("reason.json"))


def archive_paths_are_uids_only(rx: Receiver) -> None:
    archive = rx.datadir / "site" / "archive"
    for path in archive.rglob("*"):
        if path.is_file():
            assert UID_PATH.fullmatch(path.relative_to(archive).as_posix()), path
    assert not list(rx.datadir.parent.rglob("fiona-fuzz")), "a hostile UID became a path"


# ------------------------------------------------------------------------------ PDU level


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """One structural damage to a valid PDU."""
    kind = draw(st.sampled_from(["truncate", "length", "flip", "item_length", "append"]))
    raw = bytearray(data)
    if kind == "truncate":
        return bytes(raw[: draw(st.integers(0, len(raw) - 1))])
    if kind == "length":
        struct.pack_into(">L", raw, 2, draw(st.sampled_from([0, 1, 0xFFFFFFFF, 1 << 24])))
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    elif kind == "item_length":  # a variable item's 2-byte length, somewhere after the header
        at = draw(st.integers(68, len(raw) - 2))
        struct.pack_into(">H", raw, at, draw(st.sampled_from([0, 1, 0xFFFF, 0x8000])))
    else:
        raw += draw(st.binary(min_size=1, max_size=64))
    return bytes(raw)


OPENINGS = ["random", "associate_rq_damaged", "unknown_pdu", "huge_length", "empty"]


@st.composite
def hostile_openings(draw: st.DrawFn, kind: str) -> bytes:
    """What a peer sends first, instead of a proper A-ASSOCIATE-RQ."""
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=2048))
    if kind == "associate_rq_damaged":
        calling = draw(st.text("ABCXYZ ^%\x00é", min_size=0, max_size=20))
        try:
            rq = associate_rq(calling=calling or "X")
        except (ValueError, UnicodeEncodeError):
            rq = associate_rq()
        return _mutate(rq, draw)
    if kind == "unknown_pdu":
        pdu_type = draw(st.sampled_from([0x00, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x7F, 0xFF]))
        body = draw(st.binary(max_size=256))
        return struct.pack(">BBL", pdu_type, 0, len(body)) + body
    if kind == "huge_length":
        return struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF) + draw(st.binary(max_size=512))
    return b""


IN_ASSOCIATION = [
    "pdv_length_short",
    "pdv_length_long",
    "pdv_length_huge",
    "pdu_length_huge",
    "unknown_pdu",
    "dataset_without_command",
    "command_garbage",
    "command_unaccepted_context",
    "command_too_large",
    "release_huge",
    "second_associate_rq",
    "random",
]


@st.composite
def hostile_pdus(draw: st.DrawFn, kind: str) -> bytes:
    """What a peer sends inside an accepted association."""
    payload = draw(st.binary(max_size=200))
    if kind.startswith("pdv_length"):
        declared = {"pdv_length_short": 1, "pdv_length_long": len(payload) + 50}.get(
            kind, 0xFFFFFFF0
        )
        pdv = struct.pack(">LBB", declared, 1, 0x03) + payload
        return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv
    if kind == "pdu_length_huge":
        return struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + payload
    if kind == "unknown_pdu":
        pdu_type = draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x06, 0x08, 0xFF]))
        return struct.pack(">BBL", pdu_type, 0, len(payload)) + payload
    if kind == "dataset_without_command":
        return pdata(1, 0x00, payload)
    if kind == "command_garbage":
        return pdata(1, 0x01, payload)
    if kind == "command_unaccepted_context":
        context_id = draw(st.sampled_from([0, 2, 5, 255]))
        return pdata(context_id, 0x01, command(0x0030, VERIFICATION, None, False))
    if kind == "command_too_large":
        return pdata(1, 0x01, b"\x00" * 70_000)
    if kind == "release_huge":
        return struct.pack(">BBL", 0x05, 0, 0xFFFFFFF0) + payload
    if kind == "second_associate_rq":
        return associate_rq()
    return payload


@pytest.mark.parametrize("kind", OPENINGS)
@fuzz_settings(16)
@given(data=st.data())
def test_malformed_association_requests_are_refused_and_the_receiver_carries_on(
    receiver: Receiver, kind: str, data: st.DataObject
) -> None:
    sent = data.draw(hostile_openings(kind))
    FUZZ_CASES[f"receiver pdu: {kind}"] += 1
    peer = RawPeer.connect(receiver.port)
    try:
        peer.send(sent)
        answered = peer.finish()  # a Hang (no answer, no close) fails the case
    finally:
        peer.close()
    assert set(answered) <= PDU_TYPES, answered
    assert 0x02 not in answered or kind == "associate_rq_damaged"
    assert_still_serving(receiver)


@pytest.mark.parametrize("kind", IN_ASSOCIATION)
@fuzz_settings(8)
@given(data=st.data(), echo_first=st.booleans())
def test_malformed_pdus_in_an_association_are_aborted_and_the_receiver_carries_on(
    receiver: Receiver, kind: str, data: st.DataObject, echo_first: bool
) -> None:
    sent = data.draw(hostile_pdus(kind))
    FUZZ_CASES[f"receiver pdu in association: {kind}"] += 1
    peer = RawPeer.connect(receiver.port)
    try:
        peer.associate()
        if echo_first:
            peer.send(pdata(3, 0x01, command(0x0030, VERIFICATION, None, False)))
            echo = peer.read_pdu()
            assert echo is not None and echo[0] == 0x04
        peer.send(sent)
        answered = peer.finish()
    finally:
        peer.close()
    assert set(answered) <= PDU_TYPES, answered
    assert_still_serving(receiver)


# ------------------------------------------------------------------------------ dataset level


def _encoded(ds: Dataset) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values we set
        return bytes(encode(ds, False, True))


def _element(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL"):
        return struct.pack("<HH2sHL", group, elem, vr, 0, size) + value
    return struct.pack("<HH2sH", group, elem, vr, size & 0xFFFF) + value


def _deep_sequence(depth: int) -> bytes:
    """(0008,0006) nested ``depth`` times, undefined lengths: before the identifying UIDs."""
    opening = struct.pack("<HH2sHL", 0x0008, 0x0006, b"SQ", 0, 0xFFFFFFFF)
    opening += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return opening * depth + closing * depth


DATASETS = [
    "truncated",
    "bytes_flipped",
    "wrong_vr",
    "huge_length",
    "deep_sequence",
    "hostile_sop_uid",
    "hostile_study_uid",
    "uid_mismatch",
    "non_dicom",
    "empty",
]


@st.composite
def hostile_datasets(draw: st.DrawFn, kind: str) -> tuple[str, bytes]:
    """(the command's SOP Instance UID, the dataset bytes) for one C-STORE."""
    # UIDs of fixed length drawn from hypothesis: the same example must give the same bytes.
    uids = draw(st.lists(st.integers(10**20, 10**21 - 1), min_size=4, max_size=4))
    sop, study, series, frame = (f"2.25.{n}" for n in uids)

    def dataset(**extra: str) -> Dataset:
        return mr_dataset(
            sop_uid=sop,
            study_uid=study,
            series_uid=series,
            FrameOfReferenceUID=frame,
            rows=4,
            cols=4,
            **extra,
        )

    valid = _encoded(dataset())
    if kind == "truncated":
        return sop, valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "bytes_flipped":
        raw = bytearray(valid)
        for _ in range(draw(st.integers(1, 16))):
            raw[draw(st.integers(0, 400))] = draw(st.integers(0, 255))
        return sop, bytes(raw)
    if kind == "wrong_vr":
        vr = draw(st.binary(min_size=2, max_size=2))
        raw = bytearray(valid)
        at = draw(st.sampled_from([4, 4 + 8 + struct.unpack_from("<H", valid, 6)[0]]))
        raw[at : at + 2] = vr
        return sop, bytes(raw)
    if kind == "huge_length":
        length = draw(st.sampled_from([0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFE, 0x10000000]))
        vr = draw(st.sampled_from([b"OB", b"UT", b"UN", b"SQ"]))
        head = _element(0x0008, 0x0001, vr, draw(st.binary(max_size=32)), length)
        return sop, head + valid
    if kind == "deep_sequence":
        depth = draw(st.sampled_from([1, 10, 200, 2_000, 20_000]))
        return sop, _deep_sequence(depth) + valid
    if kind in ("hostile_sop_uid", "hostile_study_uid"):
        uid = draw(st.sampled_from(HOSTILE_UIDS))
        ds = dataset()
        if kind == "hostile_sop_uid":
            ds.SOPInstanceUID = uid
            sop = uid
        else:
            ds.StudyInstanceUID = uid
        ds.file_meta = FileMetaDataset()
        return sop, _encoded(ds)
    if kind == "uid_mismatch":
        return f"2.25.{uids[0] + 1}", valid
    if kind == "non_dicom":
        return sop, draw(st.binary(min_size=1, max_size=4096))
    return sop, b""


@pytest.mark.parametrize("kind", DATASETS)
@fuzz_settings(10)
@given(data=st.data())
def test_hostile_datasets_get_a_status_and_refused_ones_are_quarantined(
    receiver: Receiver, kind: str, data: st.DataObject
) -> None:
    sop_uid, dataset = data.draw(hostile_datasets(kind))
    before = len(reasons(receiver))
    peer = RawPeer.connect(receiver.port)
    try:
        peer.associate()
        status = peer.store(sop_uid, dataset)
        assert status is not None, "no C-STORE response"
        peer.release()
    finally:
        peer.close()
    outcome = "stored" if status in SUCCESS else f"refused {status:#06x}"
    FUZZ_CASES[f"receiver dataset: {kind} -> {outcome}"] += 1
    after = reasons(receiver)
    if status not in SUCCESS:
        assert len(after) == before + 1, f"{kind}: refused ({status:#06x}) but not quarantined"
        reason = json.loads(after[-1].read_text()) if after else {}
        assert reason.get("code"), reason
    if kind in ("hostile_sop_uid", "hostile_study_uid", "uid_mismatch", "non_dicom", "empty"):
        assert status not in SUCCESS, f"{kind} was accepted"
    archive_paths_are_uids_only(receiver)
    assert_still_serving(receiver)
