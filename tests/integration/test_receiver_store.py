"""The receiver against DCMTK storescu/echoscu and a real nats-server."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import pydicom
import pytest

from tests.builders import canonical_testdata_files, dataset_bytes, write_series
from tests.fiona_process import Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, echo_scu, store_scu, store_scu_as_is


def events_for(nats: NatsServer, count: int) -> list[dict]:
    wait_until(lambda: len(read_events(nats.url)) >= count, what=f"{count} events")
    return read_events(nats.url)


def test_echo_is_answered(receiver: Receiver) -> None:
    assert echo_scu("127.0.0.1", receiver.port).returncode == 0


def test_every_transfer_syntax_is_stored_byte_for_byte(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    sent = canonical_testdata_files(tmp_path / "sent")
    assert len(sent) >= 11
    store_scu_as_is("127.0.0.1", receiver.port, list(sent.values()))

    stored = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in receiver.archived()
    }
    assert len(stored) == len(sent)
    for syntax, path in sent.items():
        original = pydicom.dcmread(path, stop_before_pixels=True)
        copy = stored[original.SOPInstanceUID]
        assert pydicom.dcmread(copy).file_meta.TransferSyntaxUID == syntax
        assert dataset_bytes(copy) == dataset_bytes(path), syntax
        assert copy.name.endswith(f".{original.SOPInstanceUID}")
        assert copy.parent.name == f"scp_{original.StudyInstanceUID}"
    events = events_for(nats_server, len(sent))
    assert {e["sop_uid"] for e in events} == set(stored)
    assert all(e["schema"] == 1 and e["calling_aet"] == "STORESCU" for e in events)


def test_event_carries_what_consumers_need_and_no_patient_data(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    files = write_series(tmp_path / "in", 1, PatientName="Doe^Jane", PatientID="SECRET42")
    store_scu("127.0.0.1", receiver.port, files)
    [event] = events_for(nats_server, 1)
    ds = pydicom.dcmread(files[0])
    assert event["study_uid"] == ds.StudyInstanceUID
    assert event["series_uid"] == ds.SeriesInstanceUID
    assert event["modality"] == "MR"
    assert event["archive_path"] == f"site/archive/scp_{ds.StudyInstanceUID}/MR.{ds.SOPInstanceUID}"
    assert event["size_bytes"] == (receiver.datadir / event["archive_path"]).stat().st_size
    assert event["called_aet"] == "FIONA" and event["peer_address"] == "127.0.0.1"
    assert "SECRET42" not in json.dumps(event) and "Doe" not in json.dumps(event)


def test_concurrent_associations_store_everything(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    folders = []
    for n in range(4):
        write_series(tmp_path / f"in{n}", 40)
        folders.append(tmp_path / f"in{n}")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda d: store_scu("127.0.0.1", receiver.port, [d]), folders))
    assert all(r.returncode == 0 for r in results)
    assert len(receiver.archived()) == 160
    events = events_for(nats_server, 160)
    assert len({e["sop_uid"] for e in events}) == 160


def test_same_instance_twice_is_stored_once_without_a_second_event(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    files = write_series(tmp_path / "in", 5)
    store_scu("127.0.0.1", receiver.port, files)
    events_for(nats_server, 5)
    store_scu("127.0.0.1", receiver.port, files)

    wait_until(lambda: receiver.metric("fiona_receiver_duplicates_total") == 5, what="metric")
    assert len(receiver.archived()) == 5
    assert len(read_events(nats_server.url)) == 5
    assert receiver.metric("fiona_receiver_objects_total", outcome="duplicate") == 5


def test_different_object_under_an_archived_uid_is_kept_in_quarantine(
    tmp_path: Path, receiver: Receiver
) -> None:
    [first] = write_series(tmp_path / "a", 1)
    ds = pydicom.dcmread(first)
    ds.SeriesDescription = "changed"
    ds.save_as(tmp_path / "b.dcm", enforce_file_format=True)
    store_scu("127.0.0.1", receiver.port, [first])
    store_scu("127.0.0.1", receiver.port, [tmp_path / "b.dcm"])

    assert dataset_bytes(receiver.archived()[0]) == dataset_bytes(first)
    reasons = list((receiver.datadir / "quarantine").rglob("reason.json"))
    assert [json.loads(r.read_text())["code"] for r in reasons] == ["conflicting_duplicate"]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyInstanceUID", "../../../../tmp/evil"),
        ("SeriesInstanceUID", "1.2.3/../../x"),
        ("StudyInstanceUID", None),
        ("StudyInstanceUID", "1." + "2" * 70),
    ],
)
def test_hostile_or_missing_uid_is_refused_and_quarantined(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer, keyword: str, value: str | None
) -> None:
    [path] = write_series(tmp_path / "in", 1, **{keyword: value})
    result = store_scu("127.0.0.1", receiver.port, [path], check=False, extra_args=["-v"])

    assert result.returncode != 0
    assert "Error: DataSetDoesNotMatchSOPClass" in result.stdout + result.stderr
    assert receiver.archived() == []
    [reason] = list((receiver.datadir / "quarantine").rglob("reason.json"))
    assert json.loads(reason.read_text())["code"].startswith("invalid_")
    kept = [p for p in reason.parent.iterdir() if p.name != "reason.json"]
    assert dataset_bytes(kept[0]) == dataset_bytes(path)
    assert not (tmp_path / "evil").exists()
    assert read_events(nats_server.url) == []
