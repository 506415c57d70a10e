"""An emulator with an Incoming-like project, served on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redcap

from redcap_emulator.emulator import Emulator
from redcap_emulator.server import EmulatorServer
from tests.redcap_emulator.builders import REPEATING, incoming_dictionary


@pytest.fixture
def emulator(tmp_path: Path) -> Emulator:
    return Emulator(tmp_path / "state" / "redcap.sqlite3")


@pytest.fixture
def server(emulator: Emulator) -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator) as running:
        yield running


@pytest.fixture
def incoming(emulator: Emulator, server: EmulatorServer) -> redcap.Project:
    """A PyCap client of a classic project with the Incoming-like dictionary."""
    project_id = emulator.create_project("Incoming")
    project = redcap.Project(server.url, emulator.add_token(project_id))
    project.import_metadata(incoming_dictionary())
    project.import_repeating_instruments_events(REPEATING)
    return redcap.Project(server.url, project.token)  # fresh client: no cached metadata
