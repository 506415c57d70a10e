"""The receiver when things go wrong: NATS outages, crashes, a full disk."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.builders import dataset_bytes, write_series
from tests.fiona_process import Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, store_scu


def unique_sops(nats: NatsServer) -> set[str]:
    return {e["sop_uid"] for e in read_events(nats.url)}


def test_nats_restart_mid_send_loses_no_event(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    store_scu("127.0.0.1", receiver.port, write_series(tmp_path / "a", 20))
    wait_until(lambda: len(unique_sops(nats_server)) == 20, what="events before the outage")

    nats_server.stop()
    store_scu("127.0.0.1", receiver.port, write_series(tmp_path / "b", 30))  # must not fail
    assert len(receiver.archived()) == 50
    wait_until(lambda: receiver.metric("fiona_receiver_event_backlog") == 30, what="backlog")

    nats_server.start()
    wait_until(lambda: len(unique_sops(nats_server)) == 50, what="events after the outage")
    events = read_events(nats_server.url)
    assert len(events) == 50  # delivered once each: no duplicates in the stream
    wait_until(lambda: receiver.metric("fiona_receiver_event_backlog") == 0, what="drained")


def test_events_lost_in_a_crash_are_published_after_restart(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    receiver = Receiver(tmp_path / "rx", tmp_path / "data", nats_server.url).start()
    try:
        nats_server.stop()
        files = write_series(tmp_path / "a", 12)
        store_scu("127.0.0.1", receiver.port, files, calling_aet="SCANNER", called_aet="DEMO")
        wait_until(
            lambda: (tmp_path / "data/state/receiver-watermark.json").exists(), what="watermark"
        )
        receiver.kill()  # the 12 queued events die with the process

        nats_server.start()
        receiver = Receiver(
            tmp_path / "rx", tmp_path / "data", nats_server.url, port=receiver.port
        ).start()
        wait_until(lambda: len(unique_sops(nats_server)) == 12, what="reconciled events")
        events = read_events(nats_server.url)
        assert all(e["via"] == "reconcile" for e in events)
        # Routing by called AE title still works: the archive file recorded both AE titles.
        assert {(e["calling_aet"], e["called_aet"]) for e in events} == {("SCANNER", "DEMO")}
    finally:
        receiver.stop()


def test_restart_does_not_republish_what_was_published(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    receiver = Receiver(tmp_path / "rx", tmp_path / "data", nats_server.url).start()
    store_scu("127.0.0.1", receiver.port, write_series(tmp_path / "a", 8))
    wait_until(lambda: len(unique_sops(nats_server)) == 8, what="events")
    receiver.stop()
    receiver = Receiver(tmp_path / "rx", tmp_path / "data", nats_server.url).start()
    try:
        wait_until(lambda: receiver.metric("fiona_receiver_event_backlog") == 0, what="idle")
        assert len(read_events(nats_server.url)) == 8  # re-sent ids were deduplicated
    finally:
        receiver.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a data directory that fills up after a dozen MR images."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_answers_out_of_resources_and_keeps_stored_objects_intact(
    tmp_path: Path, nats_server: NatsServer, small_disk: Path
) -> None:
    files = write_series(tmp_path / "in", 40, rows=256, cols=256)  # ~128 KiB each
    receiver = Receiver(tmp_path / "rx", small_disk / "data", nats_server.url).start()
    try:
        result = store_scu("127.0.0.1", receiver.port, files, check=False, extra_args=["-v"])
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "OutOfResources" in output

        stored = receiver.archived()
        assert 0 < len(stored) < len(files)
        by_name = {f"MR.{_sop(f)}": f for f in files}
        for path in stored:
            assert dataset_bytes(path) == dataset_bytes(by_name[path.name])
        assert list((small_disk / "data/site/.incoming").iterdir()) == []

        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        store_scu("127.0.0.1", receiver.port, files)
        assert len(receiver.archived()) == len(files)
        wait_until(lambda: len(unique_sops(nats_server)) == len(files), what="all events")
    finally:
        receiver.stop()


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
