"""The exporter's own C-STORE SCU (services/exporter/store_scu.py) against DCMTK's storescp."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fiona_common.dicomfile import read_file_meta
from services.exporter.dicom_node import Node, Outcome, Sent, send_files
from tests.builders import (
    canonical_testdata_files,
    dataset_bytes,
    mr_dataset,
    write_part10,
    write_series,
)
from tests.peers import dcmtk_env, free_port, port_open

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.8.498.1.99"  # storescp without -pm refuses it


Factory = Callable[..., "Scp"]


class Scp:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.out = workdir / "received"
        self.out.mkdir(parents=True)
        command = ["/usr/bin/storescp", "+B", "-od", str(self.out), *args, str(self.port)]
        self.process = subprocess.Popen(
            command, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            assert self.process.poll() is None and time.monotonic() < deadline, "no storescp"
            time.sleep(0.05)

    @property
    def node(self) -> Node:
        return Node("STORESCP", "127.0.0.1", self.port)

    def received(self) -> dict[str, bytes]:
        """Received dataset bytes by SOP Instance UID."""
        return {read_file_meta(p).sop_instance: dataset_bytes(p) for p in self.out.iterdir()}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def scp_factory(tmp_path: Path) -> Iterator[Callable[..., Scp]]:
    started: list[Scp] = []

    def start(*args: str) -> Scp:
        scp = Scp(tmp_path / f"scp{len(started)}", *args)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


def sent(files: list[Path]) -> dict[str, bytes]:
    return {read_file_meta(p).sop_instance: dataset_bytes(p) for p in files}


def test_several_transfer_syntaxes_arrive_byte_for_byte(
    tmp_path: Path, scp_factory: Factory
) -> None:
    scp = scp_factory("+xa")
    shipped = canonical_testdata_files(tmp_path / "shipped")
    files = [shipped[s] for s in (EXPLICIT_LE, IMPLICIT_LE, DEFLATED, JPEG_LOSSLESS_SV1)]
    files += write_series(tmp_path / "mr", 3)
    outcomes = send_files(files, scp.node)
    assert [(o.path, o.sent, o.status) for o in outcomes] == [(f, Sent.OK, 0) for f in files]
    assert scp.received() == sent(files)


def test_peer_pdu_smaller_than_the_dataset(tmp_path: Path, scp_factory: Factory) -> None:
    scp = scp_factory("--max-pdu", "4096")
    files = write_series(tmp_path / "mr", 3, rows=128, cols=128)  # 32 KB of pixels each
    assert all(f.stat().st_size > 8 * 4096 for f in files)
    outcomes = send_files(files, scp.node)
    assert [o.sent for o in outcomes] == [Sent.OK] * 3
    assert scp.received() == sent(files)


def test_a_refused_sop_class_is_permanent_and_the_rest_is_stored(
    tmp_path: Path,
    scp_factory: Factory,
) -> None:
    scp = scp_factory()  # not promiscuous: unknown SOP classes are refused
    odd = mr_dataset(SOPClassUID=PRIVATE_SOP_CLASS)
    refused = write_part10(odd, tmp_path / "odd" / "odd.dcm")
    files = write_series(tmp_path / "mr", 2)
    outcomes = send_files([files[0], refused, files[1]], scp.node)
    assert [(o.sent, o.status) for o in outcomes] == [
        (Sent.OK, 0),
        (Sent.PERMANENT, None),
        (Sent.OK, 0),
    ]
    assert scp.received() == sent(files)


def test_nothing_listening_is_transient(tmp_path: Path) -> None:
    files = write_series(tmp_path / "mr", 2)
    outcomes = send_files(files, Node("NOBODY", "127.0.0.1", free_port()), timeout=5)
    assert outcomes == [Outcome(f, Sent.TRANSIENT, None) for f in files]


def test_a_rejected_association_is_transient(tmp_path: Path, scp_factory: Factory) -> None:
    scp = scp_factory("--refuse")
    files = write_series(tmp_path / "mr", 2)
    outcomes = send_files(files, scp.node, timeout=5)
    assert outcomes == [Outcome(f, Sent.TRANSIENT, None) for f in files]


def test_a_peer_killed_mid_batch_leaves_the_rest_transient(
    tmp_path: Path,
    scp_factory: Factory,
) -> None:
    # Each reception runs "sleep 0.1" synchronously before storescp answers: slow enough to
    # kill it while the batch is on its way.
    scp = scp_factory("-xs", "-xcr", "sleep 0.1")
    files = write_series(tmp_path / "mr", 40)
    result: list[list[Outcome]] = []
    worker = threading.Thread(target=lambda: result.append(send_files(files, scp.node, 10)))
    worker.start()
    deadline = time.monotonic() + 10
    while len(os.listdir(scp.out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    scp.stop()
    worker.join(15)
    assert not worker.is_alive() and result, "send_files hung or raised"
    outcomes = result[0]
    assert [o.path for o in outcomes] == files
    kinds = [o.sent for o in outcomes]
    first_failed = kinds.index(Sent.TRANSIENT)
    assert 1 <= first_failed < len(files) - 1
    assert kinds[:first_failed] == [Sent.OK] * first_failed
    assert all(o == Outcome(o.path, Sent.TRANSIENT, None) for o in outcomes[first_failed:])
