"""Fixtures for flows across the receiver, NATS and DCMTK peers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fiona_process import Receiver
from tests.peers import NatsServer


@pytest.fixture
def receiver(tmp_path: Path, nats_server: NatsServer) -> Iterator[Receiver]:
    """A receiver with default settings, its data under tmp_path/data."""
    rx = Receiver(tmp_path / "receiver", tmp_path / "data", nats_server.url).start()
    try:
        yield rx
    finally:
        rx.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``predicate`` (every 50 ms) until it holds; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(0.05)
