"""``fiona up``: a local NATS with JetStream plus every service as a supervised child process."""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from fiona_common.errors import ConfigError, Unavailable
from fiona_common.layout import Layout
from fiona_common.logs import configure_logging
from fiona_common.settings import Settings

log = logging.getLogger("fiona.up")

MAX_BACKOFF_SECONDS = 30.0
STOP_GRACE_SECONDS = 20.0


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        # Own process group: Ctrl-C reaches only the supervisor, which stops children in order.
        self.process = subprocess.Popen(self.argv, env=self.env, process_group=0)
        self.started_at = time.monotonic()
        log.info("started", extra={"child": self.name, "pid": self.process.pid})

    def check(self, now: float) -> None:
        """Restart the child if it died, with a growing delay if it keeps dying."""
        if self.process is not None and self.process.poll() is None:
            if now - self.started_at > 60:
                self.restarts = 0  # it ran a while: the next crash restarts promptly
            return
        if self.process is not None:
            log.error(
                "child exited, restarting",
                extra={"child": self.name, "code": self.process.returncode},
            )
            self.process = None
            self.next_start = now + min(MAX_BACKOFF_SECONDS, 2.0**self.restarts)
            self.restarts += 1
        if now >= self.next_start:
            self.start()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("child did not stop in time, killing", extra={"child": self.name})
            self.process.kill()
            self.process.wait()


def nats_child(settings: Settings, layout: Layout) -> Child:
    binary = shutil.which("nats-server")
    if binary is None:
        raise ConfigError(
            "nats-server is not installed (Debian package nats-server), "
            "or set FIONA_NATS_URL to an existing NATS"
        )
    store = layout.state_dir / "nats"
    store.mkdir(mode=0o750, parents=True, exist_ok=True)
    argv = [
        binary,
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(settings.local_nats_port),
        "-sd",
        os.fspath(store),
    ]
    return Child("nats", argv, dict(os.environ))


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise Unavailable(f"local NATS did not come up on port {port}")


def service_children(settings: Settings, services: list[str], nats_url: str) -> list[Child]:
    env = dict(os.environ, FIONA_NATS_URL=nats_url, FIONA_DATADIR=os.fspath(settings.datadir))
    if settings.config_file:
        env["FIONA_CONFIG"] = os.fspath(settings.config_file)
    return [
        Child(name, [sys.executable, "-m", "fiona_cli", "run", name.replace("_", "-")], env)
        for name in services
    ]


def run_supervisor(settings: Settings, services: list[str]) -> int:
    """Start everything, keep it running, stop it all on SIGINT/SIGTERM."""
    configure_logging("up", settings.log_level)
    layout = Layout(settings.datadir)
    layout.ensure()
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    nats = None
    nats_url = settings.nats_url
    if nats_url is None:
        nats = nats_child(settings, layout)
        nats.start()
        wait_for_port(settings.local_nats_port)
        nats_url = f"nats://127.0.0.1:{settings.local_nats_port}"
    children = service_children(settings, services, nats_url)
    log.info(
        "fiona is up",
        extra={
            "datadir": str(settings.datadir),
            "nats": nats_url,
            "dicom_port": settings.dicomport,
            "services": json.dumps(services),
        },
    )
    while not stopping:
        now = time.monotonic()
        for child in ([nats] if nats else []) + children:
            child.check(now)
        time.sleep(0.5)
    log.info("stopping")
    _stop_all(children, nats)
    return 0


def _stop_all(children: list[Child], nats: Child | None) -> None:
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        child.terminate()
    for child in children:
        child.wait(deadline)
    if nats is not None:  # last, so services can flush their events into it
        nats.terminate()
        nats.wait(time.monotonic() + 10)
