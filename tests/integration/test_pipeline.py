"""The services together: storescu -> receiver -> classifier -> arrival -> redcap_sync."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.builders import new_uid, write_series
from tests.fiona_process import (
    REPO,
    Arrival,
    Classifier,
    Exporter,
    Receiver,
    RedcapSync,
    http_get,
    read_events,
)
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, Orthanc, free_ports, store_scu


def test_a_study_sent_to_the_demo_ae_title_is_requested_for_the_demo_project(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url, data = nats_server.url, receiver.datadir
    study = new_uid()
    write_series(tmp_path / "t1", 4, study_uid=study, PatientID="CLINICAL-77", PatientName="Doe^J")
    with (
        Classifier(tmp_path / "cls", data, url),
        Arrival(tmp_path / "arr", data, url),
        RedcapSync(tmp_path / "sync", data, url, projects=None),
    ):
        store_scu("127.0.0.1", receiver.port, [tmp_path / "t1"], called_aet="DEMO")
        wait_until(
            lambda: read_events(url, "fiona.transfer.requested.>", "FIONA_TRANSFERS"),
            timeout=30,
            what="a transfer request",
        )
    [request] = read_events(url, "fiona.transfer.requested.>", "FIONA_TRANSFERS")
    assert request["study_uid"] == study and request["project"] == "DEMO"
    assert (
        re.fullmatch(r"DEMO[0-9]{4}", request["participant_id"]) and request["reason"] == "autoid"
    )
    assert (data / "config" / "projects.json").exists()
    key = data / "state" / "secrets" / "identity.key"
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    stored = json.dumps(read_events(url, "fiona.>", "FIONA_TRANSFERS"))
    assert "CLINICAL-77" not in stored and "Doe" not in stored


def test_storescu_to_research_pacs_end_to_end(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    """Sent -> classified -> complete -> routed (AutoID) -> pseudonymized -> in Orthanc."""
    url, data = nats_server.url, receiver.datadir
    pacs = Orthanc(tmp_path / "pacs", extra_config={"DicomAlwaysAllowFind": True})
    projects = tmp_path / "projects.json"
    project = {
        "name": "DEMO",
        "participant_pattern": "^DEMO[0-9]{4}$",
        "autoid": {"enabled": True, "called_aet": "DEMO"},
        "deidentification": {"profile": "recommended"},
        "destinations": [
            {"kind": "dicom", "aet": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
        ],
    }
    projects.write_text(json.dumps({"projects": [project]}))
    key = tmp_path / "identity.key"
    key.write_text("0123456789abcdef0123456789abcdef")
    study = new_uid()
    secret = {"PatientID": "CLINICAL-88", "PatientName": "Roe^Richard", "AccessionNumber": "A77"}
    write_series(
        tmp_path / "t1", 6, study_uid=study, ReferringPhysicianName="Welby^Marcus", **secret
    )
    write_series(
        tmp_path / "dwi", 3, study_uid=study, ReferringPhysicianName="Welby^Marcus", **secret
    )
    with (
        pacs,
        Classifier(tmp_path / "cls", data, url),
        Arrival(tmp_path / "arr", data, url),
        RedcapSync(tmp_path / "sync", data, url, projects),
        Exporter(tmp_path / "exp", data, url, projects),
    ):
        store_scu(
            "127.0.0.1", receiver.port, [tmp_path / "t1", tmp_path / "dwi"], called_aet="DEMO"
        )
        wait_until(
            lambda: any(
                r["outcome"] == "delivered"
                for r in read_events(url, "fiona.transfer.result", "FIONA_TRANSFERS")
            ),
            timeout=60,
            what="delivered to the research PACS",
        )
        instances = pacs.instances()
        assert len(instances) == 9
        tags = [pacs.get_json(f"/instances/{i}/simplified-tags") for i in instances]
    assert {t["PatientID"] for t in tags} == {t["PatientName"] for t in tags}
    assert re.fullmatch(r"DEMO[0-9]{4}", tags[0]["PatientID"])
    assert {t["StudyInstanceUID"] for t in tags} != {study}
    text = json.dumps(tags)
    assert all(value not in text for value in secret.values())


def test_fiona_up_delivers_a_study_to_the_research_pacs(tmp_path: Path) -> None:
    """The supervisor with every service: storescu -> ... -> Orthanc under the pseudonym."""
    pacs = Orthanc(tmp_path / "pacs", extra_config={"DicomAlwaysAllowFind": True})
    names = ["nats", "dicom", "receiver", "classifier", "arrival", "redcap_sync", "exporter"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    projects = tmp_path / "projects.json"
    node = {"kind": "dicom", "aet": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
    rule = {"project": "MEMO", "called_aet": "MEMO", "patient_id_regex": "^MEMO"}
    memo = {"name": "MEMO", "participant_pattern": "^MEMO[0-9]{3}$", "destinations": [node]}
    projects.write_text(json.dumps({"projects": [memo], "routing": [rule]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIONA_")}
    env.update(
        PYTHONPATH=str(REPO),
        TCP_NODELAY="1",
        FIONA_LOCAL_NATS_PORT=str(ports["nats"]),
        FIONA_DICOMPORT=str(ports["dicom"]),
        FIONA_ARRIVAL__QUIET_SECONDS="1.5",
        FIONA_REDCAP_SYNC__PROJECTS_FILE=str(projects),
        **{f"FIONA_{n.upper()}__HTTP_PORT": str(ports[n]) for n in names[2:]},
    )
    write_series(
        tmp_path / "in", 4, PatientID="MEMO012", PatientName="Roe^Richard", AccessionNumber="A1"
    )
    data = tmp_path / "data"
    up = subprocess.Popen(
        [sys.executable, "-m", "fiona_cli", "up", "--data", str(data)],
        env=env,
        stdout=(tmp_path / "up.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with pacs:
            for name in names[2:]:
                port = ports[name]
                wait_until(
                    lambda p=port: http_get(f"http://127.0.0.1:{p}/readyz")[0] == 200,
                    timeout=60,
                    what=f"{name} ready",
                )
            store_scu("127.0.0.1", ports["dicom"], [tmp_path / "in"], called_aet="MEMO")
            wait_until(lambda: len(pacs.instances()) == 4, timeout=60, what="in the PACS")
            tags = [pacs.get_json(f"/instances/{i}/simplified-tags") for i in pacs.instances()]
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)
    assert {t["PatientID"] for t in tags} == {"MEMO012"}
    assert "Roe" not in json.dumps(tags) and "A1" not in {t.get("AccessionNumber") for t in tags}
