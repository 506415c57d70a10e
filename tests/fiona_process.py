"""FIONA's own services as real processes for integration tests, plus NATS read-back helpers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.peers import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


class FionaService(ManagedProcess):
    """``python -m fiona_cli run SERVICE`` with its settings in the environment."""

    def __init__(
        self, workdir: Path, service: str, settings: dict[str, str], http_port: int
    ) -> None:
        self.name = f"fiona-{service}"
        super().__init__(workdir)
        self.service = service
        self.http_port = http_port
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "TCP_NODELAY": "1", **settings}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fiona_cli", "run", self.service]

    def ready(self) -> bool:
        return http_get(f"http://127.0.0.1:{self.http_port}/readyz")[0] == 200

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.http_port}/metrics")[1].decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


class Receiver(FionaService):
    """The receiver on free ports, its data under ``datadir``."""

    def __init__(
        self,
        workdir: Path,
        datadir: Path,
        nats_url: str,
        extra: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.datadir = datadir
        http_port = free_port()
        settings = {
            "FIONA_DATADIR": str(datadir),
            "FIONA_DICOMPORT": str(self.port),
            "FIONA_NATS_URL": nats_url,
            "FIONA_RECEIVER__HTTP_PORT": str(http_port),
            "FIONA_RECEIVER__ENABLED_POLL_SECONDS": "0.2",
            "FIONA_RECEIVER__INBOX_SETTLE_SECONDS": "0.5",
            **(extra or {}),
        }
        super().__init__(workdir, "receiver", settings, http_port)

    def archived(self) -> list[Path]:
        archive = self.datadir / "site" / "archive"
        return sorted(p for p in archive.rglob("*") if p.is_file()) if archive.exists() else []


def read_events(
    nats_url: str, subject: str = "fiona.instance.stored.>", stream: str = "FIONA_INSTANCES"
) -> list[dict[str, Any]]:
    """Every message currently in ``stream`` on ``subject``, decoded."""

    async def fetch_all() -> list[dict[str, Any]]:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                return []
            sub = await js.pull_subscribe(
                subject,
                stream=stream,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=5),
            )
            events: list[dict[str, Any]] = []
            remaining = info.state.messages
            while remaining > 0:
                try:
                    batch = await sub.fetch(min(remaining, 256), timeout=2)
                except TimeoutError:
                    break
                for msg in batch:
                    events.append(json.loads(msg.data))
                    await msg.ack()
                remaining -= len(batch)
            return events
        finally:
            await nc.close()

    return asyncio.run(fetch_all())


class PipelineService(FionaService):
    """A service behind the receiver: its data directory and NATS, a free HTTP port."""

    SERVICE: ClassVar[str]
    DEFAULTS: ClassVar[dict[str, str]] = {}  # test-friendly settings; ``extra`` wins

    def __init__(
        self, workdir: Path, datadir: Path, nats_url: str, extra: dict[str, str] | None = None
    ) -> None:
        http_port = free_port()
        section = self.SERVICE.replace("-", "_").upper()
        settings = {
            "FIONA_DATADIR": str(datadir),
            "FIONA_NATS_URL": nats_url,
            f"FIONA_{section}__HTTP_PORT": str(http_port),
            **self.DEFAULTS,
            **(extra or {}),
        }
        super().__init__(workdir, self.SERVICE, settings, http_port)


class Classifier(PipelineService):
    """The classifier, reading the same data directory and NATS as a receiver."""

    SERVICE = "classifier"


class Arrival(PipelineService):
    """The arrival service, short quiet periods unless ``extra`` says otherwise."""

    SERVICE = "arrival"
    DEFAULTS = {"FIONA_ARRIVAL__QUIET_SECONDS": "1.5", "FIONA_ARRIVAL__GRACE_SECONDS": "0.3"}


class RedcapSync(PipelineService):
    """The redcap_sync service with its projects file and identity key under ``workdir``."""

    SERVICE = "redcap-sync"
    DEFAULTS = {
        "FIONA_REDCAP_SYNC__REEVALUATE_SECONDS": "1",
        "FIONA_REDCAP_SYNC__RETRY_DELAY_SECONDS": "1",
    }

    def __init__(
        self,
        workdir: Path,
        datadir: Path,
        nats_url: str,
        projects: Path | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """``projects`` None: the defaults (demo project and key written in ``datadir``)."""
        files = {}
        if projects is not None:
            files = {
                "FIONA_REDCAP_SYNC__PROJECTS_FILE": str(projects),
                "FIONA_REDCAP_SYNC__KEY_FILE": str(workdir.parent / "identity.key"),
            }
        super().__init__(workdir, datadir, nats_url, {**files, **(extra or {})})


class Exporter(PipelineService):
    """The exporter, reading the projects file and the data directory of a receiver."""

    SERVICE = "exporter"
    DEFAULTS = {"FIONA_EXPORTER__RETRY_SECONDS": "0.5", "FIONA_EXPORTER__MAX_RETRY_SECONDS": "1"}

    def __init__(
        self,
        workdir: Path,
        datadir: Path,
        nats_url: str,
        projects: Path,
        extra: dict[str, str] | None = None,
    ) -> None:
        files = {"FIONA_REDCAP_SYNC__PROJECTS_FILE": str(projects)}
        super().__init__(workdir, datadir, nats_url, {**files, **(extra or {})})
