"""Declared sizes the receiver must not wait for nor buffer: a huge command set, an A-RELEASE or
A-ABORT PDU longer than its fixed 4 bytes, a P-DATA-TF above the maximum PDU length FIONA
announced. Each is aborted as soon as its header is read (well before the idle timeout, and
without the bytes ever being sent), the receiver's memory stays flat, and it keeps serving.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fiona_process import Receiver
from tests.hostile.wire import (
    MR,
    VERIFICATION,
    RawPeer,
    assert_still_serving,
    command,
    pdata,
)
from tests.peers import NatsServer

MAX_PDU = 16384
IDLE_TIMEOUT = 30.0  # an abort that came from the idle timeout would take this long
PROMPTLY = 5.0
HUGE = 3 << 30  # 3 GiB declared, a few bytes sent
MAX_COMMAND_BYTES = 1 << 16


def _receiver(root: Path, nats_url: str, max_pdu: int) -> Receiver:
    extra = {
        "FIONA_RECEIVER__MAX_PDU_BYTES": str(max_pdu),
        "FIONA_RECEIVER__IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
    }
    return Receiver(root / "rx", root / "data", nats_url, extra)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Receiver]:
    """Announces a maximum PDU length of MAX_PDU."""
    with _receiver(tmp_path_factory.mktemp("limited"), nats_url, MAX_PDU) as rx:
        yield rx
        assert "thread failed" not in rx.log_text()


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Receiver]:
    """Announces no maximum PDU length (0), so only the command limit stands in the way."""
    with _receiver(tmp_path_factory.mktemp("unlimited"), nats_url, 0) as rx:
        yield rx
        assert "thread failed" not in rx.log_text()


def peak_memory_bytes(rx: Receiver) -> int:
    """The receiver process's peak resident memory (VmHWM)."""
    assert rx.proc is not None
    for line in Path(f"/proc/{rx.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def assert_aborted_promptly(peer: RawPeer, sent_at: float) -> None:
    """The receiver answered with an A-ABORT (or closed) long before its idle timeout."""
    pdu = peer.read_pdu()
    assert pdu is None or pdu[0] == 0x07, f"expected an A-ABORT, got {pdu}"
    assert time.monotonic() - sent_at < PROMPTLY, "aborted only by the idle timeout"


def hostile(rx: Receiver, data: bytes, opening: bytes = b"") -> None:
    """Send ``data`` in a new association (after ``opening``); it must be aborted promptly,
    memory must stay flat, and a normal association must work afterwards."""
    peak_before = peak_memory_bytes(rx)
    peer = RawPeer.connect(rx.port)
    try:
        peer.associate()
        peer.send(opening)
        sent_at = time.monotonic()
        peer.send(data)
        assert_aborted_promptly(peer, sent_at)
    finally:
        peer.close()
    assert peak_memory_bytes(rx) - peak_before < 32 << 20
    # 64x64x2 bytes of pixels: several PDUs of exactly the announced maximum length.
    assert_still_serving(rx, pixels=64)


def pdu(pdu_type: int, length: int, body: bytes = b"") -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length) + body


def pdv_header(length: int, context_id: int, control: int) -> bytes:
    return struct.pack(">LBB", length, context_id, control)


# ------------------------------------------------------------------------------ command set


def test_a_huge_declared_command_is_aborted_before_it_is_read(unlimited: Receiver) -> None:
    fragment = pdv_header(HUGE - 4, 3, 0x03) + b"\x00" * 64  # command, last fragment
    hostile(unlimited, pdu(0x04, HUGE, fragment))


@pytest.mark.parametrize("receiver_name", ["limited", "unlimited"])
def test_command_fragments_adding_up_past_the_limit_are_aborted(
    receiver_name: str, request: pytest.FixtureRequest
) -> None:
    rx: Receiver = request.getfixturevalue(receiver_name)
    fragments = pdata(3, 0x01, b"\x00" * (MAX_COMMAND_BYTES + 1), chunk=MAX_PDU - 6)
    # pdata marks only the final fragment as last: the command never completes.
    hostile(rx, fragments)


def test_a_command_at_the_limit_still_gets_an_answer(unlimited: Receiver) -> None:
    echo = command(0x0030, VERIFICATION, None, False)
    padded = echo + b"\x00" * (MAX_COMMAND_BYTES - len(echo))  # trailing padding, then last
    peer = RawPeer.connect(unlimited.port)
    try:
        peer.associate()
        peer.send(pdata(3, 0x01, padded, chunk=MAX_PDU - 6))
        answer = peer.read_pdu()
        assert answer is not None and answer[0] == 0x04, answer
    finally:
        peer.close()


# ------------------------------------------------------------------------------ fixed bodies


@pytest.mark.parametrize("pdu_type", [0x05, 0x07], ids=["release_rq", "abort"])
@pytest.mark.parametrize("length", [HUGE, 5, 3])
def test_release_or_abort_with_another_length_than_4_is_aborted(
    limited: Receiver, pdu_type: int, length: int
) -> None:
    hostile(limited, pdu(pdu_type, length, b"\x00" * 3))


def test_a_well_formed_release_is_still_answered(limited: Receiver) -> None:
    peer = RawPeer.connect(limited.port)
    try:
        peer.associate()
        peer.release()
    finally:
        peer.close()


# ------------------------------------------------------------------------------ PDU length


@pytest.mark.parametrize("length", [HUGE, MAX_PDU + 64], ids=["3GiB", "just_over"])
def test_p_data_above_the_announced_maximum_is_aborted(limited: Receiver, length: int) -> None:
    store_rq = pdata(1, 0x01, command(0x0001, MR, "1.2.3.4", True))  # a dataset follows
    fragment = pdv_header(length - 4, 1, 0x02) + b"\x00" * 64  # the dataset, in one PDV
    hostile(limited, pdu(0x04, length, fragment), opening=store_rq)


def test_p_data_of_the_announced_maximum_is_accepted(limited: Receiver) -> None:
    """A C-ECHO whose command arrives in one PDU of exactly MAX_PDU bytes is answered."""
    echo = command(0x0030, VERIFICATION, None, False)
    padded = echo + b"\x00" * (MAX_PDU - 6 - len(echo))
    peer = RawPeer.connect(limited.port)
    try:
        peer.associate()
        peer.send(pdata(3, 0x01, padded, chunk=MAX_PDU - 6))
        answer = peer.read_pdu()
        assert answer is not None and answer[0] == 0x04, answer
        peer.release()
    finally:
        peer.close()
