"""Backup and restore against a real nats-server, the services as processes and Orthanc."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StreamConfig

from fiona_ops import backup_streams
from tests.builders import new_uid, write_series
from tests.fiona_process import (
    REPO,
    Arrival,
    Classifier,
    Exporter,
    Receiver,
    RedcapSync,
    read_events,
)
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, Orthanc, free_port, store_scu

T = TypeVar("T")
PROJECTS = "FIONA_REDCAP_SYNC__PROJECTS_FILE"
KEY = "0123456789abcdef0123456789abcdef"


def on_nats(url: str, work: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    """Run ``work`` with a JetStream context of the NATS at ``url``."""

    async def run() -> T:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def fiona(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The ``fiona`` command with only ``env`` as FIONA settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FIONA_")}
    return subprocess.run(
        [sys.executable, "-m", "fiona_cli", *args],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def research_project(folder: Path, pacs: Orthanc) -> dict[str, str]:
    """A projects file (AutoID for studies sent to DEMO, delivered to ``pacs``) and an identity
    key, both outside the data directory: the settings naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    node = {"kind": "dicom", "aet": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
    project = {
        "name": "DEMO",
        "participant_pattern": "^DEMO[0-9]{4}$",
        "autoid": {"enabled": True, "called_aet": "DEMO"},
        "deidentification": {"profile": "recommended"},
        "destinations": [node],
    }
    (folder / "projects.json").write_text(json.dumps({"projects": [project]}))
    (folder / "identity.key").write_text(KEY)
    (folder / "identity.key").chmod(0o600)
    return {
        PROJECTS: str(folder / "projects.json"),
        "FIONA_REDCAP_SYNC__KEY_FILE": str(folder / "identity.key"),
    }


def send_study(folder: Path, receiver: Receiver, n: int = 4) -> str:
    study = new_uid()
    write_series(folder, n, study_uid=study, PatientID="CLINICAL-5", PatientName="Roe^R")
    store_scu("127.0.0.1", receiver.port, [folder], called_aet="DEMO")
    return study


def transfers(url: str, subject: str) -> list[dict[str, Any]]:
    return read_events(url, subject, "FIONA_TRANSFERS")


def delivered(url: str) -> list[dict[str, Any]]:
    return [r for r in transfers(url, "fiona.transfer.result") if r["outcome"] == "delivered"]


def settled(url: str) -> bool:
    """Every durable consumer of every FIONA stream has handled everything."""

    async def check(js: JetStreamContext) -> bool:
        for stream in ("FIONA_INSTANCES", "FIONA_SERIES", "FIONA_STUDIES", "FIONA_TRANSFERS"):
            for consumer in await js.consumers_info(stream):
                if consumer.num_pending or consumer.num_ack_pending:
                    return False
        return True

    return on_nats(url, check)


def test_jetstream_state_round_trips_with_later_revisions_and_without_deleted_keys(
    tmp_path: Path,
) -> None:
    first, second = NatsServer(tmp_path / "n1").start(), NatsServer(tmp_path / "n2").start()
    try:

        async def fill(js: JetStreamContext) -> int:
            await js.add_stream(StreamConfig(name="EVENTS", subjects=["ev.>"]))
            for n in range(3):
                await js.publish(f"ev.{n}", b"%d" % n, headers={"Nats-Msg-Id": f"id-{n}"})
            kv = await js.create_key_value(KeyValueConfig(bucket="state", history=1))
            for n in range(5):
                await kv.put("counter", b"%d" % n)
            await kv.put("gone", b"x")
            await kv.delete("gone")
            last = await kv.put("kept", b"v1")
            return await kv.update("kept", b"v2", last=last)

        old_revision = on_nats(first.url, fill)
        records = asyncio.run(backup_streams.dump(first.url, tmp_path))
        resume = asyncio.run(backup_streams.next_sequences(first.url))
        for record in records:
            record.resume_seq = resume[record.name]
        assert [(r.name, r.messages) for r in records] == [("KV_state", 2), ("EVENTS", 3)]
        loaded = asyncio.run(backup_streams.load(second.url, tmp_path, records))
        assert loaded == {"KV_state": (2, 0), "EVENTS": (3, 0)}

        async def check(js: JetStreamContext) -> None:
            kv = await js.key_value("state")
            kept, counter = await kv.get("kept"), await kv.get("counter")
            assert (kept.value, counter.value) == (b"v2", b"4")
            assert kept.revision > old_revision and sorted(await kv.keys()) == ["counter", "kept"]
            info = await js.stream_info("EVENTS")
            assert info.config.duplicate_window == 120 and info.state.messages == 3
            again = await js.publish("ev.1", b"1", headers={"Nats-Msg-Id": "id-1"})
            assert again.duplicate  # restored ids are in the duplicate window again

        on_nats(second.url, check)
        assert read_events(second.url, "ev.>", "EVENTS") == [0, 1, 2]
    finally:
        first.stop()
        second.stop()


def test_a_pending_transfer_is_delivered_once_after_backup_wipe_and_restore(
    tmp_path: Path,
) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    pacs = Orthanc(tmp_path / "pacs", extra_config={"DicomAlwaysAllowFind": True})
    nats1 = NatsServer(tmp_path / "nats1").start()
    with pacs:
        files = research_project(tmp_path / "etc", pacs)
        url = nats1.url
        # Received, complete, assigned by AutoID and requested while no exporter runs.
        with (
            Receiver(tmp_path / "rx1", data, url) as receiver,
            Classifier(tmp_path / "cls1", data, url),
            Arrival(tmp_path / "arr1", data, url),
            RedcapSync(tmp_path / "sync1", data, url, None, files),
        ):
            send_study(tmp_path / "study", receiver)
            wait_until(lambda: transfers(url, "fiona.transfer.requested.>"), 30, "transfer request")
            made = fiona(
                ["backup", "create", str(backups), "--archive"],
                {"FIONA_DATADIR": str(data), "FIONA_NATS_URL": url, **files},
            )
            assert made.returncode == 0, made.stderr
        [request] = transfers(url, "fiona.transfer.requested.>")
        nats1.stop()
        # A new machine: no data directory, no NATS store, no projects file, no key.
        shutil.rmtree(data)
        shutil.rmtree(nats1.store_dir)
        shutil.rmtree(tmp_path / "etc")
        assert fiona(["backup", "verify", str(backups)], {}).returncode == 0
        port = free_port()  # restore starts the local NATS on this port, as fiona up would
        local = {"FIONA_DATADIR": str(data), "FIONA_LOCAL_NATS_PORT": str(port), **files}
        restored = fiona(["backup", "restore", str(backups)], local)
        assert restored.returncode == 0, restored.stderr
        assert "pending transfers resume" in restored.stdout
        nats2 = NatsServer(tmp_path / "nats2", port=port)
        nats2.store_dir = data / "state" / "nats"  # the store the restore wrote
        with (
            nats2,
            Receiver(tmp_path / "rx2", data, nats2.url),
            Classifier(tmp_path / "cls2", data, nats2.url),
            Arrival(tmp_path / "arr2", data, nats2.url),
            RedcapSync(tmp_path / "sync2", data, nats2.url, None, files),
            Exporter(tmp_path / "exp2", data, nats2.url, Path(files[PROJECTS])) as exporter,
        ):
            wait_until(lambda: delivered(nats2.url), 60, "the pending transfer delivered")
            wait_until(lambda: settled(nats2.url), 30, "every consumer caught up")
            sent = exporter.metric("fiona_exporter_objects_total", status="sent")
            requests = transfers(nats2.url, "fiona.transfer.requested.>")
            results = delivered(nats2.url)
        assert sent == 4 and len(pacs.instances()) == 4 and len(pacs.get_json("/studies")) == 1
        assert requests == [request] and len(results) == 1
        assert results[0]["transfer_id"] == request["transfer_id"]
    key = tmp_path / "etc" / "identity.key"  # restored where the settings name it, still 0600
    assert key.read_text() == KEY and key.stat().st_mode & 0o777 == 0o600
