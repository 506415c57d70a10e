"""The ``/metrics``, ``/healthz`` and ``/readyz`` HTTP endpoints every service serves.

``/readyz`` answers a small JSON document (checks, backlog, recent errors) that ``fiona status``
reads; it never contains identifiers or secrets.
"""

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SERVICE_UP = Gauge(
    "fiona_service_ready",
    "1 when the service is ready to work",
    ["service"],
    multiprocess_mode="livemax",
)
# Set by fiona_common.bus.connect_when_available and the connection's callbacks, labelled with
# the connection's name (fiona-receiver, ...): a process that never connects (the heartbeat)
# has no series. With several receiver processes: 0 as soon as one of them has lost NATS.
NATS_CONNECTED = Gauge(
    "fiona_nats_connected",
    "1 while the service's connection to NATS is up, 0 while it waits for NATS or reconnects",
    ["client"],
    multiprocess_mode="livemin",
)
# Set by fiona_common.lag.report_pending: every replica reports the same backlog (hence max).
CONSUMER_PENDING = Gauge(
    "fiona_consumer_pending",
    "Messages a durable JetStream consumer has not yet acknowledged (pending + in flight)",
    ["consumer"],
    multiprocess_mode="livemax",
)


class Health:
    """Thread-safe readiness checks and recent errors of one service process."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._checks: dict[str, bool] = {}
        self._details: dict[str, Any] = {}
        self._errors: deque[dict[str, Any]] = deque(maxlen=10)
        self.alive = True

    def set_check(self, name: str, ok: bool) -> None:
        """Record one readiness condition (e.g. ``listening``, ``nats``)."""
        with self._lock:
            self._checks[name] = ok
        SERVICE_UP.labels(self.service).set(1 if self.ready else 0)

    def set_detail(self, name: str, value: Any) -> None:
        """A figure shown by ``fiona status`` (backlog, in flight...), not a readiness condition."""
        with self._lock:
            self._details[name] = value

    def record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append({"at": time.time(), "error": message})

    @property
    def ready(self) -> bool:
        with self._lock:
            return bool(self._checks) and all(self._checks.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            checks, details, errors = dict(self._checks), dict(self._details), list(self._errors)
        return {
            "service": self.service,
            "ready": self.ready,
            "alive": self.alive,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "checks": checks,
            "details": details,
            "last_errors": errors,
        }


class ErrorRecorder(logging.Handler):
    """Keeps the last errors a service logged, for ``/readyz`` and ``fiona status``."""

    def __init__(self, health: Health) -> None:
        super().__init__(level=logging.ERROR)
        self.health = health

    def emit(self, record: logging.LogRecord) -> None:
        self.health.record_error(f"{record.name}: {record.getMessage()}")


# (method, path with query, headers, body) -> (HTTP status, JSON-able answer)
ApiHandler = Callable[[str, str, Mapping[str, str], bytes], tuple[int, Any]]
MAX_API_BODY = 1 << 20


class Api:
    """The service's own JSON routes under ``/api/``; set by the service body when ready."""

    def __init__(self) -> None:
        self.handler: ApiHandler | None = None


def _handler_for(
    health: Health, registry: CollectorRegistry, api: Api
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self._api("POST")

        def _api(self, method: str) -> None:
            if api.handler is None:
                self._send(404, b'{"error": "no API here"}', "application/json")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_API_BODY:
                self._send(413, b'{"error": "body too large"}', "application/json")
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            code, answer = api.handler(method, self.path, headers, body)
            self._send(code, json.dumps(answer).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.startswith("/api/"):
                self._api("GET")
            elif self.path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send(200 if health.alive else 503, b"ok\n" if health.alive else b"dead\n")
            elif self.path == "/readyz":
                snap = health.snapshot()
                self._send(
                    200 if snap["ready"] else 503, json.dumps(snap).encode(), "application/json"
                )
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # scrapes every 15 s would drown the service's own log

    return Handler


def default_registry() -> CollectorRegistry:
    """The process's registry or, when several processes share their metrics through files
    (``PROMETHEUS_MULTIPROC_DIR``, see services/receiver/workers.py), their sum."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class HttpServer:
    """Serves the three endpoints (and a service's ``/api/`` routes) from a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Health,
        registry: CollectorRegistry | None = None,
        api: Api | None = None,
    ) -> None:
        registry = registry or default_registry()
        handler = _handler_for(health, registry, api or Api())
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="http")

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> "HttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
