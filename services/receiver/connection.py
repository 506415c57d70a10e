"""Reading an association's socket: exact sizes, few system calls, the idle timeout."""

import socket
import ssl
import struct
from collections.abc import Callable

_CHUNK = 1 << 18


class Connection:
    """Blocking reads of exact sizes from the association's socket.

    Few system calls per object matter here: every call releases and re-takes Python's GIL,
    and with several associations that hand-over (futex calls) was most of the receiver's
    kernel time. So reads wait for the whole size (MSG_WAITALL), and the idle timeout is the
    kernel's (SO_RCVTIMEO) rather than Python's, which polls before every read.

    Not so over TLS: an SSL socket takes no receive flags, and OpenSSL retries a read that
    SO_RCVTIMEO interrupted, so there the timeout is Python's (a TimeoutError).
    """

    def __init__(self, sock: socket.socket, idle_timeout_seconds: float) -> None:
        self.sock = sock
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(idle_timeout_seconds)
            self._flags = 0
        else:
            sock.settimeout(None)
            seconds = int(idle_timeout_seconds)
            micros = int((idle_timeout_seconds - seconds) * 1_000_000)
            timeout = struct.pack("ll", seconds, micros)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
            self._flags = socket.MSG_WAITALL
        self._buf = bytearray(_CHUNK)
        self._view = memoryview(self._buf)

    def _recv(self, size: int) -> int:
        try:
            got = self.sock.recv_into(self._view, size, self._flags)
        except BlockingIOError as err:  # SO_RCVTIMEO expired
            raise TimeoutError("peer idle too long") from err
        if got == 0:
            raise ConnectionError("peer closed the connection")
        return got

    def read(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            got = self._recv(min(n - len(data), _CHUNK))
            data += self._view[:got]
        return bytes(data)

    def stream(self, n: int, sink: Callable[[memoryview], None]) -> None:
        while n > 0:
            got = self._recv(min(n, _CHUNK))
            sink(self._view[:got])
            n -= got

    def pdu_header(self) -> tuple[int, int]:
        pdu_type, _, length = struct.unpack(">BBL", self.read(6))
        return pdu_type, length
