"""``fiona reprocess`` on a delivered study: the pipeline runs again, nothing changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from fiona_common.settings import Settings
from fiona_ops.reprocess import Selection, reprocess
from tests.fiona_process import Arrival, Classifier, Exporter, Receiver, RedcapSync
from tests.integration.conftest import wait_until
from tests.integration.test_backup import (
    PROJECTS,
    delivered,
    fiona,
    on_nats,
    research_project,
    send_study,
    settled,
    transfers,
)
from tests.peers import NatsServer, Orthanc

STREAMS = ("FIONA_INSTANCES", "FIONA_SERIES", "FIONA_STUDIES", "FIONA_TRANSFERS")


def stream_counts(url: str) -> dict[str, int]:
    async def count(js: JetStreamContext) -> dict[str, int]:
        return {s: (await js.stream_info(s)).state.messages for s in STREAMS}

    return on_nats(url, count)


def kv_json(url: str, bucket: str, key: str) -> dict[str, Any]:
    async def get(js: JetStreamContext) -> dict[str, Any]:
        entry = await (await js.key_value(bucket)).get(key)
        return dict(json.loads(entry.value or b"{}"))

    return on_nats(url, get)


def arrival_counts(url: str, study: str) -> tuple[Any, ...]:
    progress = kv_json(url, "fiona_arrival", f"default.{study}")
    series = {uid: (len(s["instances"]), s["revision"]) for uid, s in progress["series"].items()}
    return progress["status"], progress["revision"], series


def summaries(data: Path, study: str) -> dict[str, tuple[str, int]]:
    found = {}
    for path in (data / "site" / "raw" / study).glob("*.json"):
        summary = json.loads(path.read_text())
        found[path.name] = (summary["NumFiles"], summary["FionaRevision"])
    return found


def test_reprocessing_a_delivered_study_counts_and_sends_nothing_twice(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url, data = nats_server.url, receiver.datadir
    pacs = Orthanc(tmp_path / "pacs", extra_config={"DicomAlwaysAllowFind": True})
    with pacs:
        files = research_project(tmp_path / "etc", pacs)
        with (
            Classifier(tmp_path / "cls", data, url),
            Arrival(tmp_path / "arr", data, url),
            RedcapSync(tmp_path / "sync", data, url, None, files),
            Exporter(tmp_path / "exp", data, url, Path(files[PROJECTS])) as exporter,
        ):
            study = send_study(tmp_path / "study", receiver)
            wait_until(lambda: delivered(url), 60, "delivered")
            wait_until(lambda: settled(url), 30, "every consumer caught up")
            before = (
                summaries(data, study),
                arrival_counts(url, study),
                exporter.metric("fiona_exporter_objects_total", status="sent"),
                len(pacs.instances()),
            )
            counts = stream_counts(url)
            # Within JetStream's duplicate window the server drops the resends.
            env = {"FIONA_DATADIR": str(data), "FIONA_NATS_URL": url}
            again = fiona(["reprocess", study], env)
            assert again.returncode == 0, again.stderr
            assert "0 events published, 4 dropped" in again.stdout
            assert stream_counts(url) == counts
            listed = fiona(["reprocess", "--since", "1", "--dry-run"], env)
            assert f"default {study}\n1 studies, 4 objects: nothing published" in listed.stdout
            unknown = fiona(["reprocess", "1.2.3.4"], env)
            assert unknown.returncode == 1
            assert unknown.stderr == "fiona: study 1.2.3.4 is not in the archive\n"
            # After the window (shortened here) they reach every consumer, selected this time
            # by the patient's keyed hash as `fiona studies` shows it.
            record = kv_json(url, "fiona_studies", f"default.{study}")
            selection = Selection(patient_hash=record["patient_id_hash"][:12])
            settings = Settings.load(None, datadir=data, nats_url=url)
            lost = next((data / "site" / "raw" / study).glob("*/*"))
            lost.unlink()  # what s2m was for: rebuilding the trees
            shorten_duplicate_window(url)
            published = [0]

            def reprocessed() -> bool:
                published[0] += reprocess(settings, selection, url, dry_run=False).published
                return published[0] >= 4

            wait_until(reprocessed, 10, "the resends accepted by JetStream")
            wait_until(lambda: settled(url), 30, "every consumer caught up again")
            after = (
                summaries(data, study),
                arrival_counts(url, study),
                exporter.metric("fiona_exporter_objects_total", status="sent"),
                len(pacs.instances()),
            )
            now = stream_counts(url)
    assert after == before and before[2] == before[3] == 4 and lost.is_symlink()
    assert now["FIONA_INSTANCES"] >= counts["FIONA_INSTANCES"] + 4
    assert {s: now[s] for s in STREAMS[1:]} == {s: counts[s] for s in STREAMS[1:]}
    assert len(delivered(url)) == 1 and len(transfers(url, "fiona.transfer.requested.>")) == 1


def shorten_duplicate_window(url: str) -> None:
    async def shorten(js: JetStreamContext) -> None:
        config = (await js.stream_info("FIONA_INSTANCES")).config
        config.duplicate_window = 0.5
        await js.update_stream(config)

    on_nats(url, shorten)
