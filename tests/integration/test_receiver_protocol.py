"""The acceptor against broken peers: garbage, aborts in the middle of an object, idle peers."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.dsutils import encode

from tests.builders import dataset_bytes, write_series
from tests.fiona_process import Receiver
from tests.integration.conftest import wait_until
from tests.peers import echo_scu

MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def pdata(context_id: int, control: int, payload: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(payload) + 2, context_id, control) + payload
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


def store_command(sop_uid: str) -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = MR
    cmd.CommandField = 0x0001
    cmd.MessageID = 1
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0001
    cmd.AffectedSOPInstanceUID = sop_uid
    body = encode(cmd, True, True)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def test_garbage_on_the_port_is_refused_and_the_receiver_carries_on(receiver: Receiver) -> None:
    for junk in (b"GET / HTTP/1.1\r\n\r\n", b"\x01\x00\xff\xff\xff\xff" + b"x" * 100, b""):
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
            sock.sendall(junk)
            # An A-ABORT or a closed connection, never a hang (a timeout fails the test). The
            # receiver may close before this side's shutdown (ENOTCONN) or reset: refusals too.
            try:
                sock.shutdown(socket.SHUT_WR)
                sock.recv(100)
            except TimeoutError:
                raise
            except OSError:
                pass
    assert echo_scu("127.0.0.1", receiver.port).returncode == 0


def test_abort_in_the_middle_of_an_object_leaves_nothing_behind(
    tmp_path: Path, receiver: Receiver
) -> None:
    [path] = write_series(tmp_path / "in", 1, rows=256, cols=256)
    data = dataset_bytes(path)
    ae = AE(ae_title="HALFWAY")
    ae.add_requested_context(MR, EXPLICIT_LE)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="FIONA")
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    sock = assoc.dul.socket.socket
    sock.sendall(pdata(context_id, 0x03, store_command("1.2.3.4.5.6")))
    sock.sendall(pdata(context_id, 0x00, data[: len(data) // 2]))
    assoc.abort()

    incoming = receiver.datadir / "site" / ".incoming"
    wait_until(lambda: not list(incoming.iterdir()), timeout=10, what="spool removed")
    assert receiver.archived() == []
    assert echo_scu("127.0.0.1", receiver.port).returncode == 0


def test_idle_association_is_aborted_after_the_timeout(tmp_path: Path, nats_server) -> None:
    extra = {"FIONA_RECEIVER__IDLE_TIMEOUT_SECONDS": "1"}
    with Receiver(tmp_path / "rx", tmp_path / "data", nats_server.url, extra) as rx:
        ae = AE(ae_title="SLEEPER")
        ae.add_requested_context(MR, EXPLICIT_LE)
        assoc = ae.associate("127.0.0.1", rx.port, ae_title="FIONA")
        assert assoc.is_established
        wait_until(lambda: not assoc.is_established, timeout=10, what="abort by the receiver")
        assert assoc.is_aborted
