"""Receiver -> classifier end to end, with real storescu and nats-server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import nats
import pydicom

from fiona_common.messages import InstanceStored
from tests.builders import new_uid, write_series
from tests.fiona_process import Classifier, Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, store_scu


def summary(datadir: Path, study: str, series: str) -> dict:
    path = datadir / "site" / "raw" / study / f"{series}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_multi_series_study_gets_trees_summaries_and_events(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    study = new_uid()
    t1 = write_series(
        tmp_path / "t1",
        6,
        study_uid=study,
        SeriesDescription="T1 MPRAGE",
        PatientID="SUBJ01",
        PatientName="Doe^Jane",
    )
    epi = write_series(tmp_path / "epi", 4, study_uid=study, SeriesDescription="rest fMRI")
    data = receiver.datadir
    with Classifier(tmp_path / "cls", data, nats_server.url):
        store_scu("127.0.0.1", receiver.port, [tmp_path / "t1", tmp_path / "epi"])
        series = {pydicom.dcmread(f[0]).SeriesInstanceUID: len(f) for f in (t1, epi)}
        for uid, count in series.items():
            wait_until(
                lambda u=uid, c=count: summary(data, study, u).get("NumFiles") == str(c),
                what=f"summary of {uid}",
            )

    for uid, count in series.items():
        links = sorted((data / "site/raw" / study / uid).iterdir())
        assert len(links) == count
        assert all(link.is_symlink() and link.resolve().is_file() for link in links)
        assert not os.readlink(links[0]).startswith("/")  # relative: the data dir can move
        doc = summary(data, study, uid)
        assert doc["StudyInstanceUID"] == study and isinstance(doc["ClassifyType"], list)
        assert doc["IncomingConnection"]["AETitleCaller"] == "STORESCU"
    [participant_link] = list((data / "site/participants/SUBJ01").iterdir())
    assert participant_link.resolve() == (data / "site/raw" / study).resolve()

    events = read_events(nats_server.url, "fiona.series.updated", "FIONA_SERIES")
    finals = {e["series_uid"]: e for e in sorted(events, key=lambda e: e["revision"])}
    assert {uid: e["num_files"] for uid, e in finals.items()} == series
    text = json.dumps(events)
    assert "SUBJ01" not in text and "Doe" not in text


def test_two_classifiers_and_redelivery_count_every_instance_exactly_once(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    study, series_uid = new_uid(), new_uid()
    write_series(tmp_path / "in", 60, study_uid=study, series_uid=series_uid)
    data = receiver.datadir
    with (
        Classifier(tmp_path / "c1", data, nats_server.url),
        Classifier(tmp_path / "c2", data, nats_server.url),
    ):
        store_scu("127.0.0.1", receiver.port, [tmp_path / "in"])
        store_scu("127.0.0.1", receiver.port, [tmp_path / "in"])  # resend: duplicates
        wait_until(
            lambda: summary(data, study, series_uid).get("NumFiles") == "60",
            what="60 instances counted",
        )
        wait_until(lambda: consumer_idle(nats_server.url), what="all events handled")
        updates = len(read_events(nats_server.url, "fiona.series.updated", "FIONA_SERIES"))
        stored = read_events(nats_server.url)
        assert len(stored) == 60
        republish(nats_server.url, stored)  # what a redelivery after a crash looks like
        wait_until(lambda: consumer_idle(nats_server.url), what="redelivered events handled")
    assert summary(data, study, series_uid)["NumFiles"] == "60"
    after = read_events(nats_server.url, "fiona.series.updated", "FIONA_SERIES")
    assert len(after) == updates  # handling an instance again changes nothing, announces nothing


def republish(nats_url: str, events: list[dict]) -> None:
    async def send() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for n, event in enumerate(events):
            await js.publish(
                InstanceStored.model_validate(event).routed_subject,
                json.dumps(event).encode(),
                headers={"Nats-Msg-Id": f"replay-{n}"},
            )
        await nc.close()

    asyncio.run(send())


def consumer_idle(nats_url: str) -> bool:
    async def pending() -> int:
        nc = await nats.connect(nats_url)
        consumers = await nc.jetstream().consumers_info("FIONA_INSTANCES")
        await nc.close()
        partitions = [c for c in consumers if c.name.startswith("classifier-p")]
        assert len(partitions) == InstanceStored.partitions
        return sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in partitions)

    return asyncio.run(pending()) == 0
