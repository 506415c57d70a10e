"""A raw DICOM upper-layer peer for hostile-input tests: every byte on the wire is the test's."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

from fiona_common.upper_layer import decode_command
from tests.builders import mr_dataset
from tests.fiona_process import Receiver

MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
ANSWER_TIMEOUT = 15.0  # far above any real answer; reaching it means the receiver hangs


class Hang(AssertionError):
    """The receiver neither answered nor closed the connection in time."""


def associate_rq(calling: str = "FUZZER", called: str = "FIONA") -> bytes:
    """A valid A-ASSOCIATE-RQ proposing MR storage (context 1) and Verification (context 3)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID("1.2.840.10008.3.1.1.1")
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    contexts = []
    for context_id, abstract in ((1, MR), (3, VERIFICATION)):
        context = PresentationContext()
        context.context_id = context_id
        context.abstract_syntax = abstract
        context.transfer_syntax = [EXPLICIT_LE]
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return bytes(rq.encode())


def pdata(context_id: int, control: int, payload: bytes, chunk: int = 16000) -> bytes:
    """P-DATA-TF PDUs carrying ``payload`` in fragments; ``control`` bit 0: command."""
    out = b""
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    for i, piece in enumerate(pieces):
        last = 0x02 if i == len(pieces) - 1 else 0x00
        pdv = struct.pack(">LBB", len(piece) + 2, context_id, control | last) + piece
        out += struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv
    return out


def command(field: int, sop_class: str, sop_uid: str | None, has_dataset: bool) -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = field
    cmd.MessageID = 7
    if field == 0x0001:
        cmd.Priority = 0
    cmd.CommandDataSetType = 0x0001 if has_dataset else 0x0101
    if sop_uid is not None:
        cmd.AffectedSOPInstanceUID = sop_uid
    body = encode(cmd, True, True)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


@dataclass
class RawPeer:
    """One TCP connection to the receiver, read with a timeout (a hang fails the test)."""

    sock: socket.socket

    @classmethod
    def connect(cls, port: int) -> RawPeer:
        sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send; False when the receiver already closed (it refused earlier bytes)."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                got = self.sock.recv(n - len(data))
            except TimeoutError as err:
                raise Hang(f"no answer within {ANSWER_TIMEOUT} s") from err
            except OSError:
                return None  # reset: a refusal
            if not got:
                return None
            data += got
        return data

    def read_pdu(self) -> tuple[int, bytes] | None:
        """The next PDU (type, body), or None when the receiver closed the connection."""
        header = self._exactly(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self._exactly(length)
        return None if body is None else (pdu_type, body)

    def finish(self) -> list[int]:
        """Close our side and read until the receiver closes; the PDU types it sent."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        seen = []
        while (pdu := self.read_pdu()) is not None:
            seen.append(pdu[0])
        return seen

    def associate(self) -> None:
        """A-ASSOCIATE-RQ; fails unless accepted."""
        assert self.send(associate_rq())
        pdu = self.read_pdu()
        assert pdu is not None and pdu[0] == 0x02, f"association not accepted: {pdu}"

    def store(self, sop_uid: str, dataset: bytes) -> int | None:
        """C-STORE ``dataset`` (raw explicit VR LE bytes) on context 1; the status, None: none."""
        self.send(pdata(1, 0x01, command(0x0001, MR, sop_uid, True)))
        self.send(pdata(1, 0x00, dataset))
        pdu = self.read_pdu()
        if pdu is None or pdu[0] != 0x04:
            return None
        status = decode_command(pdu[1][6:]).get(0x0900)
        return int(status) if isinstance(status, int) else None

    def release(self) -> None:
        self.send(struct.pack(">BBL4x", 0x05, 0, 4))
        pdu = self.read_pdu()
        assert pdu is not None and pdu[0] == 0x06, f"no A-RELEASE-RP: {pdu}"


def assert_still_serving(rx: Receiver, pixels: int = 4) -> None:
    """The process lives, and a new association gets a C-ECHO and a C-STORE (of an image of
    ``pixels`` x ``pixels``) through."""
    assert rx.running, "the receiver process died"
    ae = AE(ae_title="HEALTHCHECK")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ANSWER_TIMEOUT
    ae.add_requested_context(MR, EXPLICIT_LE)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", rx.port, ae_title="FIONA")
    assert assoc.is_established, "a normal association is no longer accepted"
    try:
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(mr_dataset(rows=pixels, cols=pixels)).Status == 0x0000
    finally:
        assoc.release()
