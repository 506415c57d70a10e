"""Fixtures starting real peers on free loopback ports; each is stopped after its test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import NatsServer, Orthanc, StoreScp


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running JetStream-enabled nats-server (store and log under tmp_path/nats)."""
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A running Orthanc with AET ORTHANC (config, storage, log under tmp_path/orthanc)."""
    server = Orthanc(tmp_path / "orthanc").start()
    try:
        yield server
    finally:
        server.kill()  # a graceful stop takes Orthanc ~3 s; its tmp data is thrown away


@pytest.fixture
def store_scp(tmp_path: Path) -> Iterator[StoreScp]:
    """A running DCMTK storescp with AET STORESCP; received files in ``.output_dir``."""
    scp = StoreScp(tmp_path / "storescp").start()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture(autouse=True)
def _no_fiona_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the FIONA_* settings they set themselves."""
    import os

    for name in [n for n in os.environ if n.startswith("FIONA_")]:
        monkeypatch.delenv(name)
