"""Several receiver processes sharing the DICOM port (RECEIVER.WORKERS)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
from pathlib import Path

from tests.builders import write_series
from tests.fiona_process import Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, echo_scu, store_scu


def workers_of(rx: Receiver) -> list[int]:
    assert rx.proc is not None
    out = subprocess.run(["pgrep", "-P", str(rx.proc.pid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def test_workers_share_the_port_and_metrics_add_up(tmp_path: Path, nats_server: NatsServer) -> None:
    extra = {"FIONA_RECEIVER__WORKERS": "2"}
    with Receiver(tmp_path / "rx", tmp_path / "data", nats_server.url, extra) as rx:
        wait_until(lambda: len(workers_of(rx)) == 1, what="second worker")
        folders = [tmp_path / f"in{n}" for n in range(4)]
        for folder in folders:
            write_series(folder, 30)
        wait_until(lambda: echo_scu("127.0.0.1", rx.port, check=False).returncode == 0)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda d: store_scu("127.0.0.1", rx.port, [d]), folders))

        assert len(rx.archived()) == 120
        wait_until(
            lambda: len({e["sop_uid"] for e in read_events(nats_server.url)}) == 120,
            what="events from both workers",
        )
        assert rx.metric("fiona_receiver_objects_total", outcome="stored") == 120

        [worker] = workers_of(rx)
        os.kill(worker, signal.SIGKILL)
        wait_until(
            lambda: workers_of(rx) not in ([], [worker]), timeout=20, what="worker restarted"
        )
    assert not Path(f"/proc/{worker}").exists()
