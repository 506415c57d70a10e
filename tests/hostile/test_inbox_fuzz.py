"""The inbox importer against hostile files: each ends archived or quarantined with a reason.

Every example drops a few generated files (plus one valid control object) into ``inbox/`` of
one running receiver, waits until the inbox is empty, and checks by content hash that every
file is in ``site/archive`` or in ``quarantine/`` next to a ``reason.json``: nothing is lost,
and the control object proves the importer is still running.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydicom import Dataset

from tests.builders import mr_dataset
from tests.fiona_process import Receiver
from tests.hostile.conftest import FUZZ_CASES, fuzz_settings
from tests.peers import NatsServer

SETTLE_TIMEOUT = 30.0
HOSTILE_UIDS = ["../../x", "1.2/../../../tmp/fiona-fuzz", "1." + "2" * 68, "", "1..2", "a.b"]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    root = tmp_path_factory.mktemp("fuzz-inbox")
    with NatsServer(root / "nats") as nats_server:
        extra = {"FIONA_RECEIVER__INBOX_SETTLE_SECONDS": "0.2"}
        with Receiver(root / "rx", root / "data", nats_server.url, extra) as rx:
            yield rx


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the invalid values are the point
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@st.composite
def hostile_files(draw: st.DrawFn) -> tuple[str, bytes]:
    uids = draw(st.lists(st.integers(10**20, 10**21 - 1), min_size=3, max_size=3))
    sop, study, series = (f"2.25.{n}" for n in uids)
    # Every UID from the draw: a generated one varies in length, and Hypothesis refuses
    # data generation that depends on anything but the draw (FlakyStrategyDefinition).
    ids = {"sop_uid": sop, "study_uid": study, "series_uid": series}
    ids |= {"FrameOfReferenceUID": f"{study}.1"}
    valid = _part10(mr_dataset(**ids, rows=4, cols=4))
    kind = draw(
        st.sampled_from(
            [
                "random",
                "empty",
                "truncated_part10",
                "preamble_without_meta",
                "hostile_uid",
                "bytes_flipped",
                "deep_sequence",
                "valid",
            ]
        )
    )
    if kind == "random":
        return kind, draw(st.binary(min_size=1, max_size=4096))
    if kind == "empty":
        return kind, b""
    if kind == "truncated_part10":
        return kind, valid[: draw(st.integers(1, len(valid) - 1))]
    if kind == "preamble_without_meta":
        return kind, b"\0" * 128 + b"DICM" + draw(st.binary(max_size=512))
    if kind == "hostile_uid":
        ds = mr_dataset(**ids, rows=4, cols=4)
        keyword = draw(st.sampled_from(["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]))
        uid = draw(st.sampled_from(HOSTILE_UIDS))
        setattr(ds, keyword, uid)
        if keyword == "SOPInstanceUID" and uid:  # pydicom will not write an empty one
            ds.file_meta.MediaStorageSOPInstanceUID = uid
        return kind, _part10(ds)
    if kind == "bytes_flipped":
        raw = bytearray(valid)
        for _ in range(draw(st.integers(1, 16))):
            raw[draw(st.integers(128, 700))] = draw(st.integers(0, 255))
        return kind, bytes(raw)
    if kind == "deep_sequence":
        depth = draw(st.sampled_from([10, 2_000]))
        opening = struct.pack("<HH2sHL", 0x0008, 0x0006, b"SQ", 0, 0xFFFFFFFF)
        opening += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
        meta_end = valid.index(b"\x08\x00\x05\x00")  # the dataset's first element
        return kind, valid[:meta_end] + opening * depth + closing * depth + valid[meta_end:]
    return kind, valid


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _kept(rx: Receiver) -> tuple[set[str], set[str]]:
    """Content hashes in the archive, and in quarantine folders that have a reason file."""
    archive = rx.datadir / "site" / "archive"
    archived = {_digest(p.read_bytes()) for p in archive.rglob("*") if p.is_file()}
    quarantined = set()
    for reason in (rx.datadir / "quarantine").rglob("reason.json"):
        assert json.loads(reason.read_text()).get("code"), reason
        for path in reason.parent.iterdir():
            if path.name != "reason.json":
                quarantined.add(_digest(path.read_bytes()))
    return archived, quarantined


@fuzz_settings(25)
@example(files=[("empty", b""), ("random", b"DICM" * 40)], nested=True, name="..")
@given(
    files=st.lists(hostile_files(), min_size=1, max_size=5),
    nested=st.booleans(),
    name=st.text("abcXYZ -_é", min_size=1, max_size=12),
)
def test_every_hostile_inbox_file_is_archived_or_quarantined_and_the_importer_keeps_running(
    receiver: Receiver, files: list[tuple[str, bytes]], nested: bool, name: str
) -> None:
    inbox = receiver.datadir / "inbox"
    folder = inbox / f"drop-{time.monotonic_ns()}" if nested else inbox
    folder.mkdir(exist_ok=True)
    control = _part10(mr_dataset(rows=4, cols=4))
    batch = [*files, ("control", control)]
    for i, (_kind, data) in enumerate(batch):
        (folder / f"{i:02d}{name.strip() or 'x'}.dcm").write_bytes(data)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while any(p.is_file() for p in inbox.rglob("*")):
        assert time.monotonic() < deadline, "files left in the inbox: the importer stalled"
        time.sleep(0.05)
    assert receiver.running, "the receiver process died"
    archived, quarantined = _kept(receiver)
    assert _digest(control) in archived, "the control object was not imported"
    for kind, data in files:
        digest = _digest(data)
        outcome = "archived" if digest in archived else "quarantined"
        assert digest in archived | quarantined, f"{kind} file lost"
        FUZZ_CASES[f"inbox: {kind} -> {outcome}"] += 1
    assert not list(receiver.datadir.parent.rglob("fiona-fuzz")), "a hostile UID became a path"
