"""``fiona pacs`` against Orthanc as the clinical PACS, and the heartbeat.

One FIONA (NATS, receiver, classifier, arrival with a 60 s quiet period) and one Orthanc loaded
with three studies serve the whole module: a retrieved study completing within seconds can only
be the PACS's announced count at work (reason ``expected-count``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from fiona_cli.main import main as fiona
from tests.builders import new_uid, write_series
from tests.fiona_process import Arrival, Classifier, FionaService, Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, Orthanc, free_port, store_scu

QUIET = 60.0  # far longer than any test here waits


@dataclass
class Study:
    uid: str
    series: dict[str, int]  # SeriesInstanceUID -> instances

    @property
    def instances(self) -> int:
        return sum(self.series.values())


@dataclass
class World:
    nats: NatsServer
    receiver: Receiver
    pacs: Orthanc
    studies: dict[str, Study]  # A: MR, 2 series; B: CT; C: MR, same patient as A

    def nodes(self, **more: dict[str, Any]) -> str:
        clinical = {"aet": self.pacs.aet, "host": "127.0.0.1", "port": self.pacs.dicom_port}
        return json.dumps({"CLINICAL": clinical, **more})


def load_study(root: Path, pacs: Orthanc, name: str, series: list[int], **tags: Any) -> Study:
    uid, counts = new_uid(), {}
    for i, n in enumerate(series):
        folder = root / name / str(i)
        files = write_series(folder, n, study_uid=uid, SeriesNumber=str(i + 1), **tags)
        counts[str(pydicom.dcmread(files[0]).SeriesInstanceUID)] = n
    store_scu("127.0.0.1", pacs.dicom_port, [root / name], called_aet=pacs.aet)
    return Study(uid, counts)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("pacs")
    data = root / "data"
    with NatsServer(root / "nats") as nats, Receiver(root / "rx", data, nats.url) as receiver:
        # Orthanc knows FIONA as the move destination (and so lets it query and retrieve).
        fiona_node = {"FIONA": ["FIONA", "127.0.0.1", receiver.port]}
        pacs = Orthanc(root / "orthanc", modalities=fiona_node).start()
        try:
            studies = {
                # A header count that is wrong (50): the PACS's count must win over it.
                "A": load_study(
                    root, pacs, "A", [3, 2], PatientID="PAT-A", AccessionNumber="ACC-A",
                    StudyDate="20240110", ImagesInAcquisition="50",
                ),
                "B": load_study(
                    root, pacs, "B", [4], PatientID="PAT-B", AccessionNumber="ACC-B",
                    StudyDate="20240220", modality="CT", ImagesInAcquisition=None,
                ),
                "C": load_study(
                    root, pacs, "C", [2, 1], PatientID="PAT-A", AccessionNumber="ACC-C",
                    StudyDate="20240305", ImagesInAcquisition=None,
                ),
            }  # fmt: skip
            slow = {"FIONA_ARRIVAL__QUIET_SECONDS": str(QUIET)}
            with (
                Classifier(root / "cls", data, nats.url),
                Arrival(root / "arr", data, nats.url, slow),
            ):
                yield World(nats, receiver, pacs, studies)
        finally:
            pacs.kill()


@pytest.fixture
def cli(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fiona`` in this process, configured for the world's NATS, data and PACS."""
    monkeypatch.setenv("FIONA_NATS_URL", world.nats.url)
    monkeypatch.setenv("FIONA_DATADIR", str(world.receiver.datadir))
    monkeypatch.setenv("FIONA_PACS_NODES", world.nodes())


def find(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, str]]:
    assert fiona(["pacs", "find", "CLINICAL", "--json", *args]) == 0
    rows: list[dict[str, str]] = json.loads(capsys.readouterr().out)
    return rows


def completion(world: World, study_uid: str, timeout: float = 30) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        events = read_events(world.nats.url, "fiona.study.complete", "FIONA_STUDIES")
        return [e for e in events if e["study_uid"] == study_uid]

    wait_until(lambda: bool(found()), timeout=timeout, what="study complete")
    [done] = found()
    return done


def assert_completed_by_the_pacs_count(done: dict[str, Any], study: Study) -> None:
    assert done["reason"] == "expected-count" and not done["incomplete"]
    assert done["num_files"] == study.instances
    assert {s["series_uid"]: s["num_files"] for s in done["series"]} == study.series
    assert {s["series_uid"]: s["expected"] for s in done["series"]} == study.series


@pytest.mark.usefixtures("cli")
def test_echo_answers_with_the_round_trip_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert fiona(["pacs", "echo", "CLINICAL"]) == 0
    assert "C-ECHO ok in" in capsys.readouterr().out


@pytest.mark.usefixtures("cli")
def test_find_studies_by_patient_date_range_accession_and_modality(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = (world.studies[k] for k in "ABC")
    rows = find(capsys, "PatientID=PAT-A", "StudyDate=20240101-20240131")
    assert [r["StudyInstanceUID"] for r in rows] == [a.uid]
    assert rows[0]["NumberOfStudyRelatedInstances"] == "5" and rows[0]["PatientName"]
    since_february = find(capsys, "PatientID=PAT-A", "StudyDate=20240201-")
    assert [r["StudyInstanceUID"] for r in since_february] == [c.uid]
    assert [r["StudyInstanceUID"] for r in find(capsys, "AccessionNumber=ACC-B")] == [b.uid]
    assert [r["StudyInstanceUID"] for r in find(capsys, "Modality=CT")] == [b.uid]
    assert find(capsys, "PatientID=NOBODY") == []


@pytest.mark.usefixtures("cli")
def test_find_series_and_images_with_filters(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    a = world.studies["A"]
    series = find(capsys, "--level", "series", f"StudyInstanceUID={a.uid}", "Modality=MR")
    counts = {r["SeriesInstanceUID"]: int(r["NumberOfSeriesRelatedInstances"]) for r in series}
    assert counts == a.series
    first = next(uid for uid, n in a.series.items() if n == 3)
    images = find(
        capsys, "--level", "image", f"StudyInstanceUID={a.uid}", f"SeriesInstanceUID={first}"
    )
    assert len(images) == 3 and {r["SeriesInstanceUID"] for r in images} == {first}
    assert sorted(r["InstanceNumber"] for r in images) == ["1", "2", "3"]


@pytest.mark.usefixtures("cli")
def test_find_prints_a_table_by_default(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert fiona(["pacs", "find", "CLINICAL", "AccessionNumber=ACC-B"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["PatientID", "PatientName", "StudyDate"]
    assert row.startswith("PAT-B") and world.studies["B"].uid in row


@pytest.mark.usefixtures("cli")
def test_move_by_study_completes_on_the_pacs_count_not_the_quiet_period(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    study = world.studies["A"]
    started = time.monotonic()
    assert fiona(["pacs", "move", "CLINICAL", "--study", study.uid]) == 0
    assert f"study {study.uid}: 5 of 5 instances moved to FIONA" in capsys.readouterr().out
    done = completion(world, study.uid)
    assert time.monotonic() - started < QUIET / 2
    assert_completed_by_the_pacs_count(done, study)  # despite ImagesInAcquisition 50
    assert done["calling_aets"] == [world.pacs.aet]


@pytest.mark.usefixtures("cli")
def test_move_by_accession_number_completes_on_the_pacs_count(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    study = world.studies["B"]
    assert fiona(["pacs", "move", "CLINICAL", "--accession", "ACC-B"]) == 0
    assert f"study {study.uid}: 4 of 4 instances" in capsys.readouterr().out
    assert_completed_by_the_pacs_count(completion(world, study.uid), study)


@pytest.mark.usefixtures("cli")
def test_get_stores_through_the_inbox_and_completes_on_the_pacs_count(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    study = world.studies["C"]
    assert fiona(["pacs", "get", "CLINICAL", "--study", study.uid]) == 0
    assert f"study {study.uid}: 3 of 3 instances retrieved into inbox/" in capsys.readouterr().out
    done = completion(world, study.uid)
    assert_completed_by_the_pacs_count(done, study)
    archive = world.receiver.datadir / "site" / "archive" / f"scp_{study.uid}"
    assert len(list(archive.iterdir())) == 3


@pytest.mark.usefixtures("cli")
def test_mistakes_and_dead_nodes_are_one_clear_line(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = {"aet": "GONE", "host": "127.0.0.1", "port": free_port(), "timeout_seconds": 3}
    monkeypatch.setenv("FIONA_PACS_NODES", world.nodes(DEAD=dead))
    attempts = [
        (["echo", "DEAD"], "not reachable"),
        (["move", "DEAD", "--study", world.studies["A"].uid], "not reachable"),
        (["find", "NOSUCH"], "no PACS node named 'NOSUCH'"),
        (["find", "CLINICAL", "StudyDate=2024-01-01"], "use YYYYMMDD"),
        (["find", "CLINICAL", "Colour=red"], "not a DICOM keyword"),
        (["move", "CLINICAL", "--study", "../../etc"], "not a valid Study Instance UID"),
        (["move", "CLINICAL", "--accession", "NONE-SUCH"], "no study with accession number"),
        (
            ["move", "CLINICAL", "--study", world.studies["B"].uid, "--dest", "NOWHERE"],
            "know the move destination 'NOWHERE'",
        ),
    ]
    for args, message in attempts:
        assert fiona(["pacs", *args]) == 1, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err


def test_heartbeat_reports_a_live_pacs_as_up_and_a_killed_one_as_down(
    tmp_path: Path,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pacs = Orthanc(tmp_path / "pacs2", aet="CLIN2").start()
    projects = tmp_path / "projects.json"
    unreachable = {"kind": "dicom", "aet": "RPACS", "host": "127.0.0.1", "port": free_port()}
    project = {"name": "P1", "participant_pattern": "^P1[0-9]+$", "destinations": [unreachable]}
    projects.write_text(json.dumps({"projects": [project]}))
    node = {"aet": "CLIN2", "host": "127.0.0.1", "port": pacs.dicom_port}
    port = free_port()
    settings = {
        "FIONA_DATADIR": str(tmp_path / "data"),
        "FIONA_NATS_URL": world.nats.url,
        "FIONA_PACS_NODES": json.dumps({"CLINICAL": node}),
        "FIONA_REDCAP_SYNC__PROJECTS_FILE": str(projects),
        "FIONA_HEARTBEAT__HTTP_PORT": str(port),
        "FIONA_HEARTBEAT__INTERVAL_SECONDS": "0.3",
        "FIONA_HEARTBEAT__TIMEOUT_SECONDS": "2",
    }
    try:
        with FionaService(tmp_path / "hb", "heartbeat", settings, port) as heartbeat:
            up = heartbeat.metric
            wait_until(lambda: up("fiona_peer_up", peer="CLINICAL") == 1, what="PACS up")
            assert up("fiona_peer_up", peer="nats") == 1 and up("fiona_peer_up", peer="RPACS") == 0
            assert 0 < up("fiona_peer_rtt_seconds", peer="CLINICAL") < 2
            for name, value in settings.items():
                monkeypatch.setenv(name, value)
            fiona(["status", "--json"])
            peers = json.loads(capsys.readouterr().out)["heartbeat"]["details"]["peers"]
            assert peers["CLINICAL"]["up"] and peers["CLINICAL"]["kind"] == "pacs"
            assert not peers["RPACS"]["up"] and peers["RPACS"]["kind"] == "destination"
            pacs.kill()
            wait_until(lambda: up("fiona_peer_up", peer="CLINICAL") == 0, what="PACS down")
            assert 'fiona_peer_rtt_seconds{peer="CLINICAL"}' not in heartbeat.metrics()
    finally:
        pacs.kill()
