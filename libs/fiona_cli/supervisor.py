"""``fiona up``: a local NATS with JetStream plus every service as a supervised child process."""

import json
import logging
import os
import shutil
import signal
import socket
import sys
import time

from fiona_common.errors import ConfigError, Unavailable
from fiona_common.layout import Layout, group_id
from fiona_common.logs import configure_logging
from fiona_common.nats_auth import masked_url
from fiona_common.process import Child, stop_children
from fiona_common.settings import Settings

log = logging.getLogger("fiona.up")


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
    return Child("nats", argv, dict(os.environ), foreign=True)


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


def janitor_child(settings: Settings, nats_url: str) -> Child:
    """Housekeeping, ``fiona janitor --loop``: a round every JANITOR.INTERVAL_SECONDS."""
    (template,) = service_children(settings, ["janitor"], nats_url)  # for its environment
    argv = [sys.executable, "-m", "fiona_cli", "janitor", "--loop"]
    return Child("janitor", argv, template.env)


def run_supervisor(settings: Settings, services: list[str]) -> int:
    """Start everything, keep it running, stop it all on SIGINT/SIGTERM."""
    configure_logging("up", settings.log_level)
    layout = Layout(settings.datadir)
    layout.ensure(group_id(settings.shared_group))
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
    children = [*service_children(settings, services, nats_url), janitor_child(settings, nats_url)]
    log.info(
        "fiona is up",
        extra={
            "datadir": str(settings.datadir),
            "nats": masked_url(nats_url),
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
    stop_children(children)
    if nats is not None:  # last, so services can flush their events into it
        stop_children([nats], grace_seconds=10)
