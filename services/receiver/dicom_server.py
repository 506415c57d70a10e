"""The receiver's DICOM acceptor: one thread per association, datasets streamed to disk.

Protocol pieces live in :mod:`upper_layer`; what to do with an association or an object is
decided by the callbacks in :class:`AssociationCallbacks` (see :mod:`handlers`).
"""

import contextlib
import logging
import socket
import socketserver
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import ALL_TRANSFER_SYNTAXES

from fiona_common.dicom_status import EchoStatus
from fiona_common.upper_layer import (
    NO_DATASET,
    UNRECOGNIZED_OPERATION,
    AssociationRequest,
    CommandField,
    NegotiatedContexts,
    PduType,
    decode_associate_rq,
    decode_command,
    encode_abort,
    encode_associate_ac,
    encode_associate_rj,
    encode_command_pdu,
    encode_release_rp,
    encode_response,
    negotiate,
)
from services.receiver import tls
from services.receiver.connection import Connection
from services.receiver.spool import Spool, encode_file_meta

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = {str(ts) for ts in ALL_TRANSFER_SYNTAXES}
MAX_ASSOCIATE_RQ_BYTES = 1 << 20
MAX_COMMAND_BYTES = 1 << 16
# A-RELEASE-RQ/RP and A-ABORT have a fixed 4-byte body (PS3.8 9.3.6-9.3.8).
FIXED_BODY_BYTES = 4
# Slack over our announced maximum PDU length, for senders that leave the PDU's or the PDV's
# 6-byte header out of their count; anything longer is a protocol violation.
PDU_LENGTH_SLACK = 12


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted."""


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of an association."""

    calling_aet: str
    called_aet: str
    address: str


@dataclass(frozen=True)
class StoreRequest:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def _never_refuse(request: StoreRequest, peer: Peer) -> int | None:
    return None


def _ignore(address: str) -> None:
    return None


@dataclass
class AssociationCallbacks:
    """What the server asks of its owner. ``admit`` returns None to accept, else (result,
    source, reason) of the A-ASSOCIATE-RJ; ``store`` returns the C-STORE status;
    ``refuse_store`` (before the dataset is written) None, or the status to answer at once;
    ``tls_failed`` hears of a connection (by address) that failed its TLS handshake."""

    admit: Callable[[Peer], tuple[int, int, int] | None]
    store: Callable[[Spool, StoreRequest, Peer], int]
    opened: Callable[[Peer], None]
    closed: Callable[[Peer], None]
    refuse_store: Callable[[StoreRequest, Peer], int | None] = _never_refuse
    tls_failed: Callable[[str], None] = _ignore


@dataclass(frozen=True)
class ServerOptions:
    spool_dir: Path
    max_pdu_bytes: int
    max_associations: int
    idle_timeout_seconds: float = 60.0
    tls_handshake_timeout_seconds: float = 10.0


class Association:
    """One association, from A-ASSOCIATE-RQ to release or abort."""

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        callbacks: AssociationCallbacks,
        options: ServerOptions,
    ) -> None:
        self.conn = Connection(sock, options.idle_timeout_seconds)
        self.address = address
        self.callbacks = callbacks
        self.options = options
        self.contexts = NegotiatedContexts()
        self.peer = Peer("", "", address)
        self._command = bytearray()
        self._pending: dict[int, int | str] | None = None
        self._spool: Spool | None = None
        self._refusal: int | None = None  # status of a C-STORE refused before its dataset

    def run(self, slots: threading.BoundedSemaphore) -> None:
        try:
            if self._negotiate(slots):
                self.callbacks.opened(self.peer)
                try:
                    self._serve()
                finally:
                    if self._spool is not None:
                        self._spool.discard()  # aborted mid-object: nothing was acknowledged
                    self.callbacks.closed(self.peer)
                    slots.release()
        except TimeoutError:
            log.info("idle association aborted", extra={"calling_aet": self.peer.calling_aet})
            self._abort()
        except (ConnectionError, OSError) as err:
            log.info(
                "association ended",
                extra={"reason": type(err).__name__, "calling_aet": self.peer.calling_aet},
            )
        except ProtocolError as err:
            log.warning("aborting association", extra={"reason": str(err)})
            self._abort()

    def _abort(self) -> None:
        with contextlib.suppress(OSError):
            self._send(encode_abort())

    def _negotiate(self, slots: threading.BoundedSemaphore) -> bool:
        pdu_type, length = self.conn.pdu_header()
        if pdu_type != PduType.ASSOCIATE_RQ or length > MAX_ASSOCIATE_RQ_BYTES:
            raise ProtocolError("expected an A-ASSOCIATE-RQ")
        body = self.conn.read(length)
        try:
            request = decode_associate_rq(struct.pack(">BBL", pdu_type, 0, length) + body)
        except (ValueError, struct.error, IndexError, KeyError) as err:
            raise ProtocolError(f"undecodable A-ASSOCIATE-RQ ({type(err).__name__})") from err
        self.peer = Peer(request.calling_aet, request.called_aet, self.address)
        rejection = self._rejection(request, slots)
        if rejection is not None:
            self._send(encode_associate_rj(*rejection))
            return False
        try:
            self.contexts = negotiate(request.contexts, TRANSFER_SYNTAXES)
            self._send(encode_associate_ac(request, self.contexts, self.options.max_pdu_bytes))
        except BaseException:
            slots.release()
            raise
        return True

    def _rejection(
        self, request: AssociationRequest, slots: threading.BoundedSemaphore
    ) -> tuple[int, int, int] | None:
        if not request.protocol_version & 0x0001:
            return (0x01, 0x02, 0x02)  # protocol version not supported
        rejection = self.callbacks.admit(self.peer)
        if rejection is None and not slots.acquire(blocking=False):
            return (0x02, 0x03, 0x02)  # transient: local limit exceeded
        return rejection

    def _serve(self) -> None:
        while True:
            pdu_type, length = self.conn.pdu_header()
            if pdu_type == PduType.P_DATA_TF:
                self._check_pdu_length(length)
                self._p_data(length)
            elif pdu_type in (PduType.RELEASE_RQ, PduType.ABORT):
                # Checked before reading: a hostile length must not make us wait or buffer.
                if length != FIXED_BODY_BYTES:
                    raise ProtocolError(f"PDU type {pdu_type:#04x} with a length of {length}")
                self.conn.read(length)
                if pdu_type == PduType.RELEASE_RQ:
                    self._send(encode_release_rp())
                return
            else:
                raise ProtocolError(f"unexpected PDU type {pdu_type:#04x}")

    def _check_pdu_length(self, length: int) -> None:
        limit = self.options.max_pdu_bytes  # what the A-ASSOCIATE-AC announced; 0: unlimited
        if limit and length > limit + PDU_LENGTH_SLACK:
            raise ProtocolError(f"P-DATA-TF of {length} bytes, above the maximum of {limit}")

    def _p_data(self, length: int) -> None:
        while length > 0:
            item_length, context_id, control = struct.unpack(">LBB", self.conn.read(6))
            if item_length < 2 or item_length + 4 > length:
                raise ProtocolError("malformed presentation data value")
            length -= 4 + item_length
            payload = item_length - 2
            if control & 0x01:
                # Checked before reading: the declared size alone must not make us buffer.
                if len(self._command) + payload > MAX_COMMAND_BYTES:
                    raise ProtocolError("command set too large")
                self._command_fragment(context_id, self.conn.read(payload), bool(control & 0x02))
            else:
                self._dataset_fragment(context_id, payload, bool(control & 0x02))

    def _command_fragment(self, context_id: int, data: bytes, last: bool) -> None:
        if self._pending is not None:
            raise ProtocolError("command received while a dataset was expected")
        self._command += data
        if not last:
            return
        command = decode_command(bytes(self._command))
        self._command = bytearray()
        if context_id not in self.contexts.accepted:
            raise ProtocolError("command on a context that was not accepted")
        if command.get(0x0800, NO_DATASET) == NO_DATASET:
            self._dispatch(context_id, command, None)
            return
        self._pending = command
        if command.get(0x0100) == CommandField.C_STORE_RQ:
            syntax = self.contexts.accepted[context_id][1]
            request = StoreRequest(
                str(command.get(0x0002, "")), str(command.get(0x1000, "")), syntax
            )
            self._refusal = self.callbacks.refuse_store(request, self.peer)
            if self._refusal is not None:
                return  # the dataset is drained unwritten, then answered with the refusal
            meta = encode_file_meta(
                request.sop_class_uid,
                request.sop_instance_uid,
                syntax,
                self.peer.calling_aet,
                self.peer.called_aet,
            )
            self._spool = Spool(self.options.spool_dir, meta, syntax)

    def _dataset_fragment(self, context_id: int, size: int, last: bool) -> None:
        if self._pending is None:
            raise ProtocolError("dataset without a command")
        if self._spool is not None:
            self.conn.stream(size, self._spool.write)
        else:
            self.conn.stream(size, lambda _chunk: None)
        if last:
            command, self._pending = self._pending, None
            self._dispatch(context_id, command, self._spool)

    def _dispatch(
        self, context_id: int, command: dict[int, int | str], spool: Spool | None
    ) -> None:
        field = int(command.get(0x0100, 0))
        message_id = int(command.get(0x0110, 0))
        sop_class = str(command.get(0x0002, ""))
        if field == CommandField.C_ECHO_RQ:
            response = encode_response(
                CommandField.C_ECHO_RSP, message_id, EchoStatus.SUCCESS, sop_class
            )
        elif field == CommandField.C_STORE_RQ and self._refusal is not None:
            status, self._refusal = self._refusal, None
            sop_uid = str(command.get(0x1000, ""))
            response = encode_response(
                CommandField.C_STORE_RSP, message_id, status, sop_class, sop_uid
            )
        elif field == CommandField.C_STORE_RQ and spool is not None:
            self._spool = None
            request = StoreRequest(
                sop_class, str(command.get(0x1000, "")), self.contexts.accepted[context_id][1]
            )
            try:
                status = self.callbacks.store(spool, request, self.peer)
            finally:
                spool.discard()
            response = encode_response(
                CommandField.C_STORE_RSP, message_id, status, sop_class, request.sop_instance_uid
            )
        elif field == CommandField.C_CANCEL_RQ:
            return
        else:
            response = encode_response(
                field | 0x8000, message_id, UNRECOGNIZED_OPERATION, sop_class
            )
        self._send(encode_command_pdu(context_id, response))

    def _send(self, data: bytes) -> None:
        self.conn.sock.sendall(data)


class ReceiverServer(socketserver.ThreadingTCPServer):
    """Accepts connections and runs each association on its own thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        callbacks: AssociationCallbacks,
        options: ServerOptions,
        reuse_port: bool = False,
        tls_context: ssl.SSLContext | None = None,
        slots: threading.BoundedSemaphore | None = None,
    ) -> None:
        self.callbacks = callbacks
        self.options = options
        self.tls_context = tls_context  # None: plain TCP
        # A listener's plain and TLS ports share its association limit (``slots``).
        self.slots = (
            slots if slots is not None else threading.BoundedSemaphore(options.max_associations)
        )
        # Several receiver processes may share the port (one core each); the kernel spreads
        # connections between them.
        self.allow_reuse_port = reuse_port
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        # socketserver would print a bare traceback on stderr; logs are JSON on stdout.
        log.exception("association thread failed")


class _Handler(socketserver.BaseRequestHandler):
    server: ReceiverServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        address = self.client_address[0]
        # Small C-STORE responses must not wait for Nagle's algorithm (~40 ms each otherwise).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self.server
        if server.tls_context is None:
            Association(sock, address, server.callbacks, server.options).run(server.slots)
            return
        # This is the association's own thread: a slow handshake holds up no one else.
        timeout = server.options.tls_handshake_timeout_seconds
        tls_sock = tls.handshake(sock, server.tls_context, timeout, address)
        if tls_sock is None:
            server.callbacks.tls_failed(address)
            return
        try:
            Association(tls_sock, address, server.callbacks, server.options).run(server.slots)
        finally:
            tls.close(tls_sock)


def start_server(server: ReceiverServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name=f"dicom-{server.port}", daemon=True)
    thread.start()
    return thread
