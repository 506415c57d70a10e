"""Receiver replicas as the Kubernetes StatefulSet runs them: one data directory, one process per
pod, each with the index of its pod (FIONA_RECEIVER__WORKER_INDEX from the pod-index label).
Every replica stores and publishes; each keeps its own watermark; only pod 0 imports the inbox."""

from __future__ import annotations

from pathlib import Path

from tests.builders import write_series
from tests.fiona_process import Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, store_scu


def test_receiver_pods_share_the_data_directory_with_their_own_index(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    data = tmp_path / "data"
    pods = [
        Receiver(
            tmp_path / f"rx{i}", data, nats_server.url, {"FIONA_RECEIVER__WORKER_INDEX": str(i)}
        )
        for i in range(2)
    ]
    with pods[0], pods[1]:
        for i, pod in enumerate(pods):
            write_series(tmp_path / f"in{i}", 5)
            store_scu("127.0.0.1", pod.port, [tmp_path / f"in{i}"])
        write_series(data / "inbox" / "dropped", 3)
        wait_until(
            lambda: len({e["sop_uid"] for e in read_events(nats_server.url)}) == 13,
            timeout=30,
            what="events of both pods and the inbox",
        )
        wait_until(
            lambda: (data / "state" / "receiver-watermark.w1.json").exists(),
            what="pod 1's own watermark",
        )
        # Pod 0: its 5 over DICOM and the 3 from the inbox; pod 1: its 5 only.
        stored = [pod.metric("fiona_receiver_objects_total", outcome="stored") for pod in pods]
        assert stored == [8, 5]
        imports = [pod.metric("fiona_receiver_inbox_imports_total") for pod in pods]
        assert imports == [3, 0]
    assert (data / "state" / "receiver-watermark.json").exists()
    assert len(pods[0].archived()) == 13
