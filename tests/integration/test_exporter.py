"""The exporter against real parts: receiver + classifier fill the archive, Orthanc receives."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from fiona_common.bus import connect
from fiona_common.messages import TransferRequested
from tests.builders import new_uid, write_series
from tests.fiona_process import Classifier, Exporter, Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, Orthanc, free_port, store_scu

SECRET = ("Doe^Jane", "CLINICAL-123", "ACC-999")


def projects_file(path: Path, destinations: list[dict[str, Any]]) -> Path:
    project = {
        "name": "MEMO",
        "participant_pattern": "^MEMO[0-9]{3}$",
        "deidentification": {"profile": "recommended"},
        "destinations": destinations,
    }
    path.write_text(json.dumps({"projects": [project], "routing": []}))
    return path


def send_study(tmp_path: Path, receiver: Receiver, nats_url: str, n: int = 5) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    study = new_uid()
    write_series(
        tmp_path / "in",
        n,
        study_uid=study,
        PatientName=SECRET[0],
        PatientID=SECRET[1],
        AccessionNumber=SECRET[2],
    )
    with Classifier(tmp_path / "cls", receiver.datadir, nats_url):
        store_scu("127.0.0.1", receiver.port, [tmp_path / "in"])
        raw = receiver.datadir / "site" / "raw" / study
        wait_until(lambda: sum(1 for _ in raw.glob("*/*")) == n, what="indexed")
    return study


def request(study: str, request_no: int = 1, revision: int = 1) -> TransferRequested:
    return TransferRequested(
        transfer_id="a1b2c3d4e5f60718",
        request_no=request_no,
        site="default",
        study_uid=study,
        project="MEMO",
        participant_id="MEMO007",
        event="baseline",
        revision=revision,
        reason="manual",
    )


def publish(url: str, event: TransferRequested) -> None:
    async def send() -> None:
        bus = await connect(url, "test")
        await bus.ensure_streams()
        await bus.publish(event)
        await bus.close()

    asyncio.run(send())


def results(url: str, outcome: str | None = None) -> list[dict[str, Any]]:
    found = read_events(url, "fiona.transfer.result", "FIONA_TRANSFERS")
    return [r for r in found if outcome is None or r["outcome"] == outcome]


def no_secret_in(data: bytes) -> bool:
    return not any(s.encode() in data for s in SECRET)


def test_outbox_delivery_is_pseudonymized_atomic_and_checksummed(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url)
    projects = projects_file(tmp_path / "projects.json", [{"kind": "outbox"}])
    extra = {"FIONA_EXPORTER__OUTBOX_ARCHIVE": "true"}
    with Exporter(tmp_path / "exp", receiver.datadir, url, projects, extra):
        publish(url, request(study))
        wait_until(lambda: results(url, "delivered"), timeout=30, what="delivered")
    [done] = results(url, "delivered")
    mapped = done["details"]["mapped_study_uid"]
    folder = receiver.datadir / "outbox" / "MEMO" / "MEMO007" / "baseline" / mapped
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(files) == 5 and mapped != study
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.PatientID == "MEMO007" and ds.PatientName == "MEMO007"
        assert ds.StudyInstanceUID == mapped and no_secret_in(f.read_bytes())
    archive = folder.with_name(folder.name + ".zip")
    digest = (folder.with_name(folder.name + ".zip.sha256")).read_text().split()[0]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest
    assert len(zipfile.ZipFile(archive).namelist()) == 5
    assert not list((receiver.datadir / "outbox" / ".incoming").iterdir())


@pytest.fixture
def research_pacs(tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc as the research PACS, answering FIONA's C-FIND (verification)."""
    pacs = Orthanc(tmp_path / "pacs", extra_config={"DicomAlwaysAllowFind": True})
    with pacs:
        yield pacs


def test_orthanc_receives_the_pseudonymized_study_verified_and_only_the_delta_later(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer, research_pacs: Orthanc
) -> None:
    url, orthanc = nats_server.url, research_pacs
    study = send_study(tmp_path, receiver, url, n=4)
    node = {"kind": "dicom", "aet": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    projects = projects_file(tmp_path / "projects.json", [node])
    with Exporter(tmp_path / "exp", receiver.datadir, url, projects) as exporter:
        publish(url, request(study))
        wait_until(lambda: results(url, "delivered"), timeout=30, what="delivered")
        assert len(orthanc.instances()) == 4
        # A late object of the same study, then the resend of the reopened study.
        late = write_series(
            tmp_path / "late",
            1,
            study_uid=study,
            PatientName=SECRET[0],
            PatientID=SECRET[1],
            ReferringPhysicianName="Welby^Marcus",
        )
        store_scu("127.0.0.1", receiver.port, late)
        with Classifier(tmp_path / "cls2", receiver.datadir, url):
            raw = receiver.datadir / "site" / "raw" / study
            wait_until(lambda: sum(1 for _ in raw.glob("*/*")) == 5, what="late one indexed")
        publish(url, request(study, request_no=2, revision=2))
        wait_until(lambda: len(results(url, "delivered")) == 2, timeout=30, what="resent")
        # 4 C-STOREs, then only the late one (Orthanc would hide a resend: it overwrites).
        sent = exporter.metric("fiona_exporter_objects_total", destination="dicom", status="sent")
        assert sent == 5
    second = results(url, "delivered")[1]["details"]["destination_0"]
    assert second["sent"] == 5 and second["verified"] == 5
    assert len(orthanc.instances()) == 5
    for instance in orthanc.instances():
        tags = orthanc.get_json(f"/instances/{instance}/simplified-tags")
        assert tags["PatientID"] == "MEMO007"
        assert no_secret_in(json.dumps(tags).encode())


def test_destination_down_is_retried_then_given_up(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url, n=2)
    node = {"kind": "dicom", "aet": "NOBODY", "host": "127.0.0.1", "port": free_port()}
    projects = projects_file(tmp_path / "projects.json", [node])
    extra = {"FIONA_EXPORTER__MAX_ATTEMPTS": "3"}
    with Exporter(tmp_path / "exp", receiver.datadir, url, projects, extra):
        publish(url, request(study))
        wait_until(lambda: results(url, "failed"), timeout=30, what="given up")
    [failed] = results(url, "failed")
    assert "unreachable after 3 tries" in failed["error"]


def test_destination_coming_up_gets_the_study(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url, n=3)
    orthanc = Orthanc(tmp_path / "orthanc-late")
    node = {"kind": "dicom", "aet": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    projects = projects_file(tmp_path / "projects.json", [node])
    with Exporter(tmp_path / "exp", receiver.datadir, url, projects):
        publish(url, request(study))
        wait_until(lambda: len(results(url)) >= 1, what="started")
        assert not results(url, "delivered")
        with orthanc:
            wait_until(lambda: results(url, "delivered"), timeout=30, what="delivered")
            assert len(orthanc.instances()) == 3


def test_verification_notices_what_the_destination_lost(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer, research_pacs: Orthanc
) -> None:
    url, orthanc = nats_server.url, research_pacs
    study = send_study(tmp_path, receiver, url, n=3)
    node = {"kind": "dicom", "aet": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    projects = projects_file(tmp_path / "projects.json", [node])
    with Exporter(tmp_path / "exp", receiver.datadir, url, projects):
        publish(url, request(study))
        wait_until(lambda: results(url, "delivered"), timeout=30, what="delivered")
        orthanc.delete(f"/instances/{orthanc.instances()[0]}")
        publish(url, request(study, request_no=2))  # the user asks again
        wait_until(lambda: results(url, "failed"), timeout=30, what="verification failed")
    assert "holds 2 of the 3" in results(url, "failed")[0]["error"]


def test_killed_mid_study_and_two_replicas_send_every_object_once(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer, research_pacs: Orthanc
) -> None:
    url, orthanc = nats_server.url, research_pacs
    studies = [send_study(tmp_path / f"s{n}", receiver, url, n=20) for n in range(3)]
    node = {"kind": "dicom", "aet": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    projects = projects_file(tmp_path / "projects.json", [node])
    quick = {"FIONA_EXPORTER__ACK_WAIT_SECONDS": "4"}
    first = Exporter(tmp_path / "e1", receiver.datadir, url, projects, quick)
    with first, Exporter(tmp_path / "e2", receiver.datadir, url, projects, quick):
        for n, study in enumerate(studies):
            publish(url, request(study).model_copy(update={"transfer_id": f"{n:016x}"}))
        wait_until(lambda: len(orthanc.instances()) >= 5, timeout=30, what="sending began")
        first.kill()  # kill -9 in the middle of a study
        first.start()
        wait_until(lambda: len(results(url, "delivered")) == 3, timeout=120, what="all delivered")
    assert len(orthanc.instances()) == 60
    assert len({r["transfer_id"] for r in results(url, "delivered")}) == 3


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own trust anchor) and its key."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_delivery_over_tls_checks_the_node_certificate(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url, n=3)
    cert, key = self_signed(tmp_path / "tls")
    tls_config = {
        "DicomAlwaysAllowFind": True,
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(cert),
        "DicomTlsPrivateKey": str(key),
        "DicomTlsTrustedCertificates": str(cert),
        "DicomTlsRemoteCertificateRequired": False,
    }
    pacs = Orthanc(tmp_path / "pacs", extra_config=tls_config)
    node = {
        "kind": "dicom",
        "aet": pacs.aet,
        "host": "127.0.0.1",
        "port": pacs.dicom_port,
        "tls": True,
        "tls_ca_file": str(cert),
    }
    projects = projects_file(tmp_path / "projects.json", [node])
    with pacs, Exporter(tmp_path / "exp", receiver.datadir, url, projects):
        publish(url, request(study))
        wait_until(lambda: results(url, "delivered"), timeout=30, what="delivered over TLS")
        assert len(pacs.instances()) == 3
        assert results(url, "delivered")[0]["details"]["destination_0"]["verified"] == 3
