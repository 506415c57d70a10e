"""The exporter uploading to a real OpenSSH server: confirmation, corruption, outage, restart."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import nats

from tests.builders import new_uid, write_series
from tests.fiona_process import Classifier, Exporter, Receiver
from tests.integration.conftest import wait_until
from tests.integration.test_exporter import (
    SECRET,
    no_secret_in,
    projects_file,
    publish,
    request,
    results,
)
from tests.peers import NatsServer, store_scu
from tests.sshd import ChecksumWriter, Sshd, flip_a_byte, keygen

STUDY_PATH = ("MEMO", "MEMO007", "baseline")
QUICK = {"FIONA_EXPORTER__MAX_ATTEMPTS": "30"}  # retries every 0.5-1 s (Exporter defaults)


def send_study(tmp_path: Path, receiver: Receiver, url: str, n: int, pixels: int = 0) -> str:
    """``n`` objects into the archive, indexed; ``pixels`` random bytes each (so the
    archive does not compress to nothing) when given."""
    study, extra = new_uid(), {}
    if pixels:
        side = int((pixels // 2) ** 0.5)
        extra = {"rows": side, "cols": side, "PixelData": os.urandom(side * side * 2)}
    files = write_series(
        tmp_path / "in",
        n,
        study_uid=study,
        PatientName=SECRET[0],
        PatientID=SECRET[1],
        AccessionNumber=SECRET[2],
        **extra,
    )
    with Classifier(tmp_path / "cls", receiver.datadir, url):
        store_scu("127.0.0.1", receiver.port, files)
        raw = receiver.datadir / "site" / "raw" / study
        wait_until(lambda: sum(1 for _ in raw.glob("*/*")) == n, what="indexed")
    return study


def ledger(url: str, key: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            kv = await nc.jetstream().key_value("fiona_ledger")
            entry = await kv.get(key)
            return dict(json.loads(entry.value or b"{}"))
        finally:
            await nc.close()

    return asyncio.run(get())


def uploaded(sshd: Sshd, name: str) -> Path:
    return sshd.root.joinpath("upload", *STUDY_PATH, name)


def sent(receiver: Receiver, name: str) -> Path:
    return receiver.datadir.joinpath("sent", *STUDY_PATH, name)


def test_study_is_uploaded_confirmed_and_moved_to_sent(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url, n=3)
    with Sshd(tmp_path / "sshd") as sshd:
        projects = projects_file(tmp_path / "projects.json", [sshd.destination()])
        with Exporter(tmp_path / "exp", receiver.datadir, url, projects) as exporter:
            publish(url, request(study))
            wait_until(lambda: results(url, "delivered"), timeout=30, what="delivered")
            assert exporter.metric("fiona_exporter_sftp_uploads_total", outcome="confirmed") == 1
            assert exporter.metric("fiona_exporter_objects_total", destination="sftp") == 3
        [done] = results(url, "delivered")
        mapped = done["details"]["mapped_study_uid"]
        assert done["details"]["destination_0"]["sent"] == 3
        assert done["details"]["destination_0"]["packages_sent"] == 1
        archive = sent(receiver, f"{mapped}.zip")
        assert uploaded(sshd, f"{mapped}.zip").read_bytes() == archive.read_bytes()
        assert uploaded(sshd, f"{mapped}.zip.sha256").read_text().split()[0] == (
            hashlib.sha256(archive.read_bytes()).hexdigest()
        )
        names = zipfile.ZipFile(archive).namelist()
        assert len(names) == 3 and no_secret_in(archive.read_bytes())
    left_in_outbox = receiver.datadir.joinpath("outbox", *STUDY_PATH).glob(f"{mapped}*")
    assert not list(left_in_outbox)  # moved on to sent/
    receipt = json.loads(sent(receiver, f"{mapped}.receipt.json").read_text())
    [(server, confirmed)] = receipt["confirmed"].items()
    assert server.startswith("sftp://") and confirmed["confirmed_by"] == "read_back"
    entries = ledger(url, f"{request(study).transfer_id}.0")["objects"]
    assert entries[f"package:{mapped}.zip"]["status"] == "sent"
    assert sum(1 for e in entries.values() if e["status"] == "sent") == 4


def test_upload_the_site_finds_corrupted_is_sent_again(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url, n=2)

    def bad_first_transfer(path: Path, count: int) -> None:
        if count == 1:
            flip_a_byte(path)

    checks = {"confirm": "md5_file", "checksum_suffix": ".md5sum_server"}
    with Sshd(tmp_path / "sshd") as sshd:
        site = ChecksumWriter(sshd.root, suffix=".md5sum_server", tamper=bad_first_transfer)
        projects = projects_file(tmp_path / "projects.json", [sshd.destination(**checks)])
        with site, Exporter(tmp_path / "exp", receiver.datadir, url, projects) as exporter:
            publish(url, request(study))
            wait_until(lambda: results(url, "delivered"), timeout=30, what="delivered")
            failures = exporter.metric("fiona_exporter_sftp_confirmation_failures_total")
            assert failures == 1 and site.count == 2
    mapped = results(url, "delivered")[0]["details"]["mapped_study_uid"]
    archive = sent(receiver, f"{mapped}.zip").read_bytes()
    assert uploaded(sshd, f"{mapped}.zip").read_bytes() == archive
    md5 = uploaded(sshd, f"{mapped}.zip.md5sum_server").read_text().split()[0]
    assert md5 == hashlib.md5(archive).hexdigest()


def test_server_down_then_up_gets_the_study(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url, n=2)
    sshd = Sshd(tmp_path / "sshd")  # keys and port chosen, not running yet
    projects = projects_file(tmp_path / "projects.json", [sshd.destination()])
    with Exporter(tmp_path / "exp", receiver.datadir, url, projects, QUICK) as exporter:
        publish(url, request(study))
        failed = {"outcome": "failed"}
        wait_until(
            lambda: exporter.metric("fiona_exporter_sftp_uploads_total", **failed) >= 2,
            what="two failed uploads",
        )
        assert not results(url, "delivered")
        with sshd:
            wait_until(lambda: results(url, "delivered"), timeout=30, what="delivered")
        assert exporter.metric("fiona_exporter_sftp_retries_total", reason="failure") >= 2
    mapped = results(url, "delivered")[0]["details"]["mapped_study_uid"]
    assert (
        uploaded(sshd, f"{mapped}.zip").read_bytes() == sent(receiver, f"{mapped}.zip").read_bytes()
    )


def test_unknown_host_key_fails_the_transfer_and_nothing_is_uploaded(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url, n=1)
    impostor = keygen(tmp_path / "impostor")
    with Sshd(tmp_path / "sshd") as sshd:
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")  # not this server's key
        destination = sshd.destination(known_hosts_file=str(known))
        projects = projects_file(tmp_path / "projects.json", [destination])
        with Exporter(tmp_path / "exp", receiver.datadir, url, projects):
            publish(url, request(study))
            wait_until(lambda: results(url, "failed"), timeout=30, what="failed")
        assert "host key differs" in results(url, "failed")[0]["error"]
        assert not (sshd.root / "upload").exists()
        assert "Accepted publickey" not in sshd.log_text()


def test_exporter_killed_mid_upload_continues_where_it_stopped(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url = nats_server.url
    study = send_study(tmp_path, receiver, url, n=8, pixels=40_000)
    settings = {**QUICK, "FIONA_EXPORTER__ACK_WAIT_SECONDS": "2"}
    with Sshd(tmp_path / "sshd") as sshd:
        slow = sshd.destination(max_bytes_per_second=100_000)
        projects = projects_file(tmp_path / "projects.json", [slow])
        exporter = Exporter(tmp_path / "exp", receiver.datadir, url, projects, settings)
        with exporter:
            publish(url, request(study))
            parts = sshd.root.joinpath("upload", *STUDY_PATH)

            def part_size() -> int:
                return sum(p.stat().st_size for p in parts.glob(".*.zip.part"))

            wait_until(lambda: parts.exists() and part_size() > 100_000, what="half uploaded")
            exporter.kill()  # kill -9 in the middle of the upload
            left = part_size()
            exporter.start()
            wait_until(lambda: results(url, "delivered"), timeout=40, what="delivered")
            written = exporter.metric("fiona_exporter_sftp_bytes_total")
            resumed = exporter.metric("fiona_exporter_sftp_retries_total", reason="resume")
        mapped = results(url, "delivered")[0]["details"]["mapped_study_uid"]
        archive = sent(receiver, f"{mapped}.zip").read_bytes()
        assert uploaded(sshd, f"{mapped}.zip").read_bytes() == archive
    assert len(archive) > 300_000 and resumed == 1
    assert written < len(archive) - left + 1_000  # the rest, and the small .sha256 file
