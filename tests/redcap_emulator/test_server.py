"""The HTTP side: restarts, TLS with a verified certificate, concurrent clients."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redcap
import requests

from redcap_emulator.emulator import Emulator
from redcap_emulator.server import EmulatorServer
from tests.certificates import certificate_authority
from tests.redcap_emulator.builders import REPEATING, incoming_dictionary, series, study


def test_data_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "redcap.sqlite3"
    first = Emulator(db)
    token = first.add_token(first.create_project("Incoming"))
    with EmulatorServer(first) as server:
        project = redcap.Project(server.url, token)
        project.import_metadata(incoming_dictionary())
        project.import_repeating_instruments_events(REPEATING)
        project.import_records(
            [study("1", study_description="x"), series("1", 1, series_num_files=4)]
        )
        before = project.export_records()

    with EmulatorServer(Emulator(db)) as server:
        after = redcap.Project(server.url, token).export_records()

    assert after == before and len(after) == 2


def test_database_and_its_directory_are_private(tmp_path: Path) -> None:
    db = tmp_path / "new" / "dir" / "redcap.sqlite3"
    Emulator(db)

    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_tls_with_verification_against_a_ca_bundle(tmp_path: Path, emulator: Emulator) -> None:
    ca, cert, key = certificate_authority(tmp_path)
    token = emulator.add_token(emulator.create_project("Secure"))

    with EmulatorServer(emulator, tls_cert=cert, tls_key=key) as server:
        project = redcap.Project(server.url, token, verify_ssl=str(ca))
        project.import_records([{"record_id": "1"}])
        rows = project.export_records()
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(server.url, data={"token": token, "content": "version"}, timeout=10)
        assert server.url.startswith("https://127.0.0.1:")

    assert rows == [{"record_id": "1", "my_first_instrument_complete": "0"}]


def test_concurrent_imports_lose_nothing(emulator: Emulator, server: EmulatorServer) -> None:
    token = emulator.add_token(emulator.create_project("Incoming"))
    setup = redcap.Project(server.url, token)
    setup.import_metadata(incoming_dictionary())
    setup.import_repeating_instruments_events(REPEATING)

    def import_study(number: int) -> None:
        # A client per thread: PyCap's shared session is not meant for concurrent use.
        project = redcap.Project(server.url, token)
        for instance in range(1, 4):
            project.import_records(
                [
                    study("shared", study_description="x"),
                    series("shared", number * 10 + instance, series_num_files=instance),
                    series(f"s{number}", instance, series_num_files=instance),
                ]
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(import_study, range(8)))

    rows = redcap.Project(server.url, token).export_records()
    shared_series = [
        r for r in rows if r["study_instance_uid"] == "shared" and r["redcap_repeat_instance"]
    ]
    assert len(shared_series) == 8 * 3
    assert len({r["study_instance_uid"] for r in rows}) == 9
    assert len(rows) == 9 + 8 * 3 + 8 * 3


def test_only_post_to_the_api_path(server: EmulatorServer) -> None:
    base = server.url.removesuffix("api/")

    assert (
        requests.post(base + "other/", data={"content": "version"}, timeout=10).status_code == 404
    )
    assert requests.get(server.url, timeout=10).status_code == 405
