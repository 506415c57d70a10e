"""SFTP uploads against a real OpenSSH server (no NATS): names, confirmation, resume, limits."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from fiona_common.errors import ConfigError
from fiona_common.projects import Destination
from services.exporter import sftp
from services.exporter.outbox_dir import write_archive
from services.exporter.sftp_package import (
    RETRY_LATER,
    Confirmation,
    Failed,
    Package,
    upload,
    window_wait,
)
from tests.peers import free_port
from tests.sshd import ChecksumWriter, Sshd, flip_a_byte, keygen

RELATIVE = "MEMO/MEMO007/baseline/2.25.42"
SFTP = {"kind": "sftp", "host": "h", "user": "u", "key_file": "/k"}


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    with Sshd(tmp_path / "sshd") as server:
        yield server


def server_of(sshd: Sshd, **fields: Any) -> sftp.Server:
    return sftp.Server.of(Destination.model_validate(sshd.destination(**fields)))


def study(tmp_path: Path, *sizes: int) -> Path:
    """An outbox study folder with random files of ``sizes`` bytes, and its archive."""
    target = tmp_path / "outbox" / RELATIVE
    target.mkdir(parents=True, exist_ok=True)
    for n, size in enumerate(sizes):
        (target / f"{n:04d}.dcm").write_bytes(os.urandom(size))
    write_archive(target)
    return target


def archive_of(target: Path, server: sftp.Server) -> Package:
    return Package.of(target, RELATIVE, server, archive=True)


def remote(sshd: Sshd, name: str) -> Path:
    return sshd.root / "upload" / "MEMO" / "MEMO007" / "baseline" / name


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_upload_is_renamed_only_once_read_back_and_not_written_twice(
    tmp_path: Path, sshd: Sshd
) -> None:
    target, server = study(tmp_path, 50_000, 70_000), server_of(sshd)
    zip_path = target.with_name(target.name + ".zip")
    seen: list[tuple[str, bool, bool]] = []

    def written(temp: str) -> None:  # the moment between writing and confirming
        name = temp.rsplit("/", 1)[1]
        final = remote(sshd, name.removeprefix(".").removesuffix(".part"))
        seen.append((name, (sshd.root / temp).is_file(), final.exists()))

    receipt = upload(server, archive_of(target, server), Confirmation(), on_written=written)
    assert seen == [(".2.25.42.zip.part", True, False), (".2.25.42.zip.sha256.part", True, False)]
    assert remote(sshd, "2.25.42.zip").read_bytes() == zip_path.read_bytes()
    sidecar = remote(sshd, "2.25.42.zip.sha256").read_text()
    assert sidecar.split()[0] == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert receipt.sha256 == sidecar.split()[0] and receipt.confirmed_by == "read_back"
    assert receipt.remote == "upload/MEMO/MEMO007/baseline/2.25.42.zip"
    assert not list(sshd.root.rglob("*.part"))
    again = upload(server, archive_of(target, server), Confirmation())
    assert again.bytes_written == 0 and again.sha256 == receipt.sha256


def test_corrupted_upload_is_detected_and_written_again(tmp_path: Path, sshd: Sshd) -> None:
    target, server = study(tmp_path, 80_000), server_of(sshd)
    failures = counter("fiona_exporter_sftp_confirmation_failures_total")
    corrupted: list[str] = []

    def corrupt_first(temp: str) -> None:  # a transfer that went wrong, once
        if temp.endswith(".zip.part") and not corrupted:
            flip_a_byte(sshd.root / temp)
            corrupted.append(temp)

    receipt = upload(server, archive_of(target, server), Confirmation(), on_written=corrupt_first)
    zip_path = target.with_name(target.name + ".zip")
    assert corrupted and remote(sshd, "2.25.42.zip").read_bytes() == zip_path.read_bytes()
    assert receipt.bytes_written > 2 * zip_path.stat().st_size - 100  # the archive went twice
    assert counter("fiona_exporter_sftp_confirmation_failures_total") == failures + 1


def test_corruption_every_time_fails_the_attempt_without_a_final_name(
    tmp_path: Path, sshd: Sshd
) -> None:
    target, server = study(tmp_path, 10_000), server_of(sshd)

    def corrupt(temp: str) -> None:
        if temp.endswith(".zip.part"):
            flip_a_byte(sshd.root / temp)

    with pytest.raises(Failed, match="after 3 uploads"):
        upload(server, archive_of(target, server), Confirmation(), on_written=corrupt)
    assert not remote(sshd, "2.25.42.zip").exists()


def test_server_checksum_file_confirms_and_a_wrong_one_makes_it_upload_again(
    tmp_path: Path, sshd: Sshd
) -> None:
    target, server = study(tmp_path, 60_000), server_of(sshd)
    confirmation = Confirmation("md5_file", ".md5sum_server", timeout_seconds=10)

    def bad_first_transfer(path: Path, count: int) -> None:
        if count == 1:
            flip_a_byte(path)

    failures = counter("fiona_exporter_sftp_confirmation_failures_total")
    with ChecksumWriter(sshd.root, suffix=".md5sum_server", tamper=bad_first_transfer) as site:
        receipt = upload(server, archive_of(target, server), confirmation)
        assert site.count == 2  # the corrupted upload and the one sent again
    zip_path = target.with_name(target.name + ".zip")
    assert remote(sshd, "2.25.42.zip").read_bytes() == zip_path.read_bytes()
    md5 = remote(sshd, "2.25.42.zip.md5sum_server").read_text().split()[0]
    assert md5 == hashlib.md5(zip_path.read_bytes()).hexdigest()
    assert receipt.confirmed_by == "md5_file"
    assert counter("fiona_exporter_sftp_confirmation_failures_total") == failures + 1


def test_no_server_checksum_in_time_is_retried_later_without_writing_again(
    tmp_path: Path, sshd: Sshd
) -> None:
    target, server = study(tmp_path, 20_000), server_of(sshd)
    confirmation = Confirmation("md5_file", timeout_seconds=0.5)
    with pytest.raises(Failed, match="no checksum file"):
        upload(server, archive_of(target, server), confirmation)
    with ChecksumWriter(sshd.root):  # the site's job runs again
        receipt = upload(server, archive_of(target, server), confirmation)
    assert receipt.bytes_written == len(target.with_name("2.25.42.zip.sha256").read_bytes())


def test_an_interrupted_upload_is_continued_not_restarted(tmp_path: Path, sshd: Sshd) -> None:
    target, server = study(tmp_path, 300_000), server_of(sshd)
    data = target.with_name(target.name + ".zip").read_bytes()
    part = remote(sshd, ".2.25.42.zip.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:120_000])  # what a killed exporter left
    receipt = upload(server, archive_of(target, server), Confirmation())
    sidecar = len(target.with_name("2.25.42.zip.sha256").read_bytes())
    assert receipt.resumed and receipt.bytes_written == len(data) - 120_000 + sidecar
    assert remote(sshd, "2.25.42.zip").read_bytes() == data


def test_bandwidth_limit_is_kept_within_tolerance(tmp_path: Path, sshd: Sshd) -> None:
    target = study(tmp_path, 400_000)
    server = server_of(sshd, max_bytes_per_second=200_000)
    size = target.with_name(target.name + ".zip").stat().st_size
    bucket = sftp.TokenBucket(200_000)
    started = time.monotonic()
    upload(server, archive_of(target, server), Confirmation(), bucket)
    elapsed = time.monotonic() - started
    expected = (size - sftp.CHUNK) / 200_000  # the first chunk goes at once
    assert expected * 0.9 <= elapsed <= expected * 1.5 + 1.0, elapsed


def test_folder_package_replaces_the_earlier_folder_as_a_whole(tmp_path: Path, sshd: Sshd) -> None:
    target, server = study(tmp_path, 5_000, 6_000), server_of(sshd)
    upload(server, Package.of(target, RELATIVE, server, archive=False), Confirmation())
    (target / "0009.dcm").write_bytes(b"late object")  # the reopened study, sent again
    receipt = upload(server, Package.of(target, RELATIVE, server, archive=False), Confirmation())
    folder = remote(sshd, "2.25.42")
    assert sorted(p.name for p in folder.iterdir()) == ["0000.dcm", "0001.dcm", "0009.dcm"]
    assert (folder / "0009.dcm").read_bytes() == b"late object"
    assert receipt.remote == "upload/MEMO/MEMO007/baseline/2.25.42"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["2.25.42"]  # no .part, no .old


def test_unknown_or_changed_host_key_is_refused_before_anything_is_written(
    tmp_path: Path, sshd: Sshd
) -> None:
    target = study(tmp_path, 1_000)
    other = keygen(tmp_path / "impostor")  # the key some other server has
    cases = {"empty": "", "changed": f"[127.0.0.1]:{sshd.port} {other}\n"}
    for name, text in cases.items():
        known = tmp_path / f"known_{name}"
        known.write_text(text)
        server = server_of(sshd, known_hosts_file=str(known))
        with pytest.raises(sftp.Refused, match="host key"):
            upload(server, archive_of(target, server), Confirmation())
    assert not (sshd.root / "upload").exists()
    assert "Accepted publickey" not in sshd.log_text()


def test_server_down_is_a_failure_worth_retrying(tmp_path: Path, sshd: Sshd) -> None:
    target = study(tmp_path, 1_000)
    server = server_of(sshd, port=free_port())
    known = sshd.known_hosts.read_text().replace(str(sshd.port), str(server.port))
    (tmp_path / "known").write_text(known)
    server = server_of(sshd, port=server.port, known_hosts_file=str(tmp_path / "known"))
    with pytest.raises(RETRY_LATER):
        upload(server, archive_of(target, server), Confirmation())


def test_key_with_a_wrong_passphrase_is_a_configuration_error(tmp_path: Path, sshd: Sshd) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase")
    server = server_of(sshd, passphrase_file=str(wrong))
    with pytest.raises(ConfigError, match="not a usable private key"), sftp.session(server):
        pass


def test_token_bucket_keeps_the_rate_after_its_burst() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = sftp.TokenBucket(1000, burst=500, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bucket.take(250)  # 2500 bytes: 500 at once, 2000 at 1000 per second
    assert sum(slept) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("window", "hour", "wait_hours"),
    [
        (None, 13, 0),
        ("22:00-06:00", 23, 0),
        ("22:00-06:00", 3, 0),
        ("22:00-06:00", 6, 16),
        ("22:00-06:00", 21, 1),
        ("08:00-17:00", 18, 14),
        ("08:00-17:00", 8, 0),
    ],
)
def test_upload_window_is_local_time_and_may_span_midnight(
    window: str | None, hour: int, wait_hours: int
) -> None:
    destination = Destination.model_validate({**SFTP, "window": window})
    assert destination.seconds_until_window(hour * 3600) == wait_hours * 3600
    local = time.localtime()
    clock = time.mktime((*local[:3], hour, 0, 0, 0, 0, -1))
    now = datetime.fromtimestamp(clock, tz=UTC)  # the exporter's clock is UTC
    assert window_wait(destination, now) == wait_hours * 3600


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "sftp", "host": "h", "user": "u"}, "needs host, user and key_file"),
        ({**SFTP, "package": "folder", "confirm": "md5_file"}, "needs package archive"),
        ({**SFTP, "window": "22:00-6:00"}, "should match pattern"),
    ],
)
def test_sftp_destination_is_checked(fields: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Destination.model_validate(fields)
