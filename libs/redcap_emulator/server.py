"""HTTP(S) front of the emulator: ``POST /api/`` on a thread per connection."""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from redcap_emulator.emulator import Emulator
from redcap_emulator.protocol import TEXT_TYPE, ApiResponse

log = logging.getLogger(__name__)

API_PATHS = ("/api/", "/api")
MAX_BODY_BYTES = 256 * 1024 * 1024
SOCKET_TIMEOUT_SECONDS = 60


class _ApiHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.emulator = emulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _ApiRequestHandler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close kept-alive connections too: a stopped server answers nothing (an outage)."""
        with self._open_lock:
            open_now = list(self._open)
        for connection in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        # Failed TLS handshakes and dropped connections: one line, not a traceback.
        log.warning(
            "connection from %s failed", client_address, exc_info=log.isEnabledFor(logging.DEBUG)
        )


class _ApiRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "REDCapEmulator"
    timeout = SOCKET_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] not in API_PATHS:
            self._send(ApiResponse(404, b"Not Found", TEXT_TYPE))
            return
        length = self._content_length()
        if length is None:
            return
        body = self.rfile.read(length)
        started = time.monotonic()
        assert isinstance(self.server, _ApiHttpServer)
        response, record = self.server.emulator.handle(body, self.headers.get("Content-Type", ""))
        self._send(response)
        log.info(
            "POST %s content=%s action=%s project=%s status=%d bytes=%d %.1fms",
            self.path,
            record.content or "-",
            record.action,
            record.project_id if record.project_id is not None else "-",
            response.status,
            len(response.body),
            (time.monotonic() - started) * 1000,
        )

    def do_GET(self) -> None:
        self._send(ApiResponse(405, b"The REDCap API takes POST requests only", TEXT_TYPE))

    def _content_length(self) -> int | None:
        text = self.headers.get("Content-Length")
        if text is None or not text.isdigit():
            self._send(ApiResponse(411, b"Content-Length required", TEXT_TYPE))
            return None
        if int(text) > MAX_BODY_BYTES:
            self._send(ApiResponse(413, b"Request body too large", TEXT_TYPE))
            return None
        return int(text)

    def _send(self, response: ApiResponse) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        """Silence http.server's own access log; do_POST logs one line without secrets."""


class EmulatorServer:
    """Serves an Emulator over HTTP, or HTTPS when given a certificate and key.

    Usable as a context manager; ``port=0`` picks a free port (see ``url``).
    """

    def __init__(
        self,
        emulator: Emulator,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate and its key")
        self.emulator = emulator
        self.host, self.port = host, port
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self._httpd: _ApiHttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API URL (ends in ``/api/`` as PyCap requires)."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        host, port = self._httpd.server_name, self._httpd.server_port
        host_text = f"[{host}]" if ":" in host else host
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host_text}:{port}/api/"

    def start(self) -> EmulatorServer:
        httpd = _ApiHttpServer((self.host, self.port), self.emulator)
        if self.tls_cert and self.tls_key:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.tls_cert, self.tls_key)
            # Handshake in the connection's thread, so a slow client cannot stall accept().
            httpd.socket = context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="redcap-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()
        if self._thread is not None:
            self._thread.join()
        self._httpd, self._thread = None, None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
