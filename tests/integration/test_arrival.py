"""The arrival service against a real nats-server (and, end to end, receiver and classifier)."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from nats.js.api import ConsumerConfig

from fiona_cli.main import main as fiona
from fiona_common.bus import connect
from fiona_common.consumers import CLASSIFIER_DURABLES
from fiona_common.messages import InstanceStored, StoredVia
from tests.builders import new_uid, write_series
from tests.fiona_process import Arrival, Classifier, Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, store_scu


def short_uid() -> str:
    """A UID short enough to append instance numbers to (SOP UID = series UID + ".n")."""
    return f"1.2.826.0.1.{secrets.randbelow(10**12)}"


def instances(
    study: str, series: str, n: int, aet: str = "SCANNER", first: int = 0
) -> list[InstanceStored]:
    return [
        InstanceStored(
            site="default",
            study_uid=study,
            series_uid=series,
            sop_uid=f"{series}.{i}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            modality="MR",
            archive_path=f"site/archive/scp_{study}/MR.{series}.{i}",
            size_bytes=1,
            calling_aet=aet,
            called_aet="FIONA",
            peer_address="127.0.0.1",
            via=StoredVia.DICOM,
            received_at=datetime.now(UTC),
        )
        for i in range(first, first + n)
    ]


def publish(url: str, events: list[InstanceStored]) -> None:
    async def send() -> None:
        bus = await connect(url, "test")
        await bus.ensure_streams()
        assert all(await bus.publish_many(list(events)))
        await bus.close()

    asyncio.run(send())


def completions(url: str, level: str = "study") -> list[dict[str, Any]]:
    stream = "FIONA_STUDIES" if level == "study" else "FIONA_SERIES"
    return read_events(url, f"fiona.{level}.complete", stream)


def test_quiet_period_then_late_arrival_reopens_and_completes_revision_2(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    study, series = new_uid(), short_uid()
    url = nats_server.url
    with Arrival(tmp_path / "arrival", tmp_path / "data", url) as arrival:
        publish(url, instances(study, series, 5))
        markers = tmp_path / "data/site/.arrived"
        wait_until(lambda: markers.exists() and len(list(markers.iterdir())) == 2, what="markers")
        wait_until(lambda: len(completions(url)) == 1, what="study complete")
        [done] = completions(url)
        assert (done["revision"], done["num_files"], done["reason"]) == (1, 5, "quiet")
        assert list(markers.iterdir()) == []  # removed once the study is complete
        publish(url, instances(study, series, 5))  # redelivered or re-published: nothing new
        publish(url, instances(study, series, 1, first=5))  # a late instance
        wait_until(lambda: len(completions(url)) == 2, what="second completion")
        assert completions(url)[1]["revision"] == 2 and completions(url)[1]["num_files"] == 6
        reopened = read_events(url, "fiona.study.reopened", "FIONA_STUDIES")
        assert [e["revision"] for e in reopened] == [1]
        assert [e["revision"] for e in completions(url, "series")] == [1, 2]
        assert arrival.metric("fiona_arrival_completions_total", level="study") == 2


def test_concurrent_studies_from_two_senders_with_their_own_quiet_periods(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    url = nats_server.url
    fast, slow = new_uid(), new_uid()
    extra = {"FIONA_ARRIVAL__QUIET_SECONDS_BY_AET": '{"SLOWPACS": 4}'}
    with Arrival(tmp_path / "arrival", tmp_path / "data", url, extra):
        publish(
            url,
            instances(fast, short_uid(), 3, aet="SCANNER")
            + instances(slow, short_uid(), 3, aet="SLOWPACS"),
        )
        started = time.monotonic()
        wait_until(lambda: len(completions(url)) == 1, what="the fast study")
        assert completions(url)[0]["study_uid"] == fast
        wait_until(lambda: len(completions(url)) == 2, what="the slow study")
        assert time.monotonic() - started >= 2.0
        slow_done = completions(url)[1]
        assert slow_done["study_uid"] == slow and slow_done["calling_aets"] == ["SLOWPACS"]


def test_killed_in_the_middle_every_study_still_completes_exactly_once(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    url = nats_server.url
    studies = [new_uid() for _ in range(3)]
    arrival = Arrival(
        tmp_path / "arrival", tmp_path / "data", url, {"FIONA_ARRIVAL__QUIET_SECONDS": "2"}
    )
    with arrival:
        publish(url, [e for s in studies for e in instances(s, short_uid(), 4)])
        wait_until(
            lambda: arrival.metric("fiona_arrival_instances_total", outcome="counted") == 12,
            what="counted",
        )
        arrival.kill()  # kill -9 with three timers running
        time.sleep(2.5)  # every deadline passes while nobody is there
        arrival.start()
        wait_until(lambda: len(completions(url)) == 3, what="three completions")
        time.sleep(1.0)
    done = completions(url)
    assert sorted(e["study_uid"] for e in done) == sorted(studies)
    assert {e["revision"] for e in done} == {1}
    assert len(completions(url, "series")) == 3


def test_a_study_is_not_complete_while_the_classifier_has_not_indexed_it(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    # The exporter sends what the classifier indexed: a study completed while its objects wait
    # in the classifier's queue (the classifier down or restarting) was sent without them.
    url = nats_server.url
    study, series = new_uid(), short_uid()
    events = instances(study, series, 4)
    classifier = ClassifierQueues(url)
    with Arrival(tmp_path / "arrival", tmp_path / "data", url) as arrival:
        publish(url, events)
        wait_until(
            lambda: arrival.metric("fiona_arrival_instances_total", outcome="counted") == 4,
            what="counted",
        )
        time.sleep(3.0)  # twice the quiet period: due, but the classifier has not read them
        assert completions(url) == []
        assert classifier.handle_all() == 4  # the classifier comes back and indexes them
        wait_until(lambda: len(completions(url)) == 1, what="study complete")
    [done] = completions(url)
    assert (done["revision"], done["num_files"]) == (1, 4)


class ClassifierQueues:
    """The classifier's durable consumers, created as the classifier does, with nobody
    reading them until :meth:`handle_all`."""

    def __init__(self, url: str) -> None:
        self.url = url
        asyncio.run(self._run(handle=False))

    def handle_all(self) -> int:
        return asyncio.run(self._run(handle=True))

    async def _run(self, handle: bool) -> int:
        bus = await connect(self.url, "test-classifier")
        await bus.ensure_streams()
        handled = 0
        for n, durable in enumerate(CLASSIFIER_DURABLES):
            sub = await bus.js.pull_subscribe(
                InstanceStored.subject_filter(n),
                durable=durable,
                stream=InstanceStored.stream,
                config=ConsumerConfig(durable_name=durable, ack_wait=60),
            )
            while handle:
                try:
                    msgs = await sub.fetch(256, timeout=0.3)
                except TimeoutError:
                    break
                for msg in msgs:
                    await msg.ack_sync()
                handled += len(msgs)
        await bus.close()
        return handled


def test_two_replicas_complete_each_study_once(tmp_path: Path, nats_server: NatsServer) -> None:
    url = nats_server.url
    studies = [new_uid() for _ in range(4)]
    with (
        Arrival(tmp_path / "a1", tmp_path / "data", url),
        Arrival(tmp_path / "a2", tmp_path / "data", url),
    ):
        events = [
            e
            for s in studies
            for series in (short_uid(), short_uid())
            for e in instances(s, series, 20)
        ]
        publish(url, events)
        wait_until(lambda: len(completions(url)) == 4, what="four completions")
        time.sleep(2.0)  # a second completion by the other replica would show by now
    done = completions(url)
    assert sorted(e["study_uid"] for e in done) == sorted(studies)
    assert all(e["num_files"] == 40 and e["revision"] == 1 for e in done)
    assert len(completions(url, "series")) == 8


def test_storescu_study_completes_by_expected_count_before_the_quiet_period(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url, data = nats_server.url, receiver.datadir
    study = new_uid()
    t1 = write_series(tmp_path / "t1", 6, study_uid=study)  # ImagesInAcquisition = 6
    dwi = write_series(tmp_path / "dwi", 4, study_uid=study)
    with (
        Classifier(tmp_path / "cls", data, url),
        Arrival(tmp_path / "arrival", data, url, {"FIONA_ARRIVAL__QUIET_SECONDS": "30"}),
    ):
        store_scu("127.0.0.1", receiver.port, [tmp_path / "t1", tmp_path / "dwi"])
        sent = time.monotonic()
        wait_until(lambda: len(completions(url)) == 1, timeout=20, what="study complete")
        assert time.monotonic() - sent < 10  # far below the 30 s quiet period
    [done] = completions(url)
    assert done["reason"] == "expected-count" and done["num_files"] == 10
    uids = {pydicom.dcmread(f[0]).SeriesInstanceUID: len(f) for f in (t1, dwi)}
    assert {s["series_uid"]: s["num_files"] for s in done["series"]} == uids
    assert all(s["expected"] == s["num_files"] for s in done["series"])


def test_fiona_complete_forces_a_study_in_flight(
    tmp_path: Path,
    nats_server: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = nats_server.url
    study = new_uid()
    monkeypatch.setenv("FIONA_NATS_URL", url)
    with Arrival(
        tmp_path / "arrival", tmp_path / "data", url, {"FIONA_ARRIVAL__QUIET_SECONDS": "60"}
    ) as arrival:
        publish(url, instances(study, short_uid(), 2))
        wait_until(
            lambda: arrival.metric("fiona_arrival_instances_total", outcome="counted") == 2,
            what="counted",
        )
        assert fiona(["complete", study]) == 0
        wait_until(lambda: len(completions(url)) == 1, what="forced completion")
        assert completions(url)[0]["reason"] == "forced"
        assert fiona(["complete", study]) == 0
        assert "already complete" in capsys.readouterr().out
        assert fiona(["complete", "1.2.3.999"]) == 1  # unknown: a clear message, no traceback
        assert fiona(["complete", "../etc"]) == 1
