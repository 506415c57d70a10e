"""DICOM TLS on the receiver: DCMTK senders over TLS, mutual TLS, and peers that fail the
handshake (no certificate, plain DICOM, silence) without holding up anyone else.

One receiver process with a TLS port serves the module; the certificates are made here.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pynetdicom import AE

from fiona_common.dicom_client import Tls
from tests.builders import write_series
from tests.certificates import TlsFiles, mutual_tls
from tests.fiona_process import REPO, Receiver
from tests.hostile.wire import associate_rq
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, dcmtk, dcmtk_env, free_ports, store_scu

HANDSHAKE_TIMEOUT = 4.0
IDLE_TIMEOUT = 4.0
ALLOWED = "STORESCU,ECHOSCU,FIONAPY"
REFUSED = "rejected_tls_handshake"


class TlsReceiver(Receiver):
    """The receiver with a plain port and a TLS port (``tls_port``)."""

    def __init__(self, root: Path, nats_url: str, files: TlsFiles, **tls: str) -> None:
        plain, self.tls_port = free_ports(2)
        extra = {
            "FIONA_RECEIVER__TLS_PORT": str(self.tls_port),
            "FIONA_RECEIVER__TLS_CERT_FILE": str(files.server_cert),
            "FIONA_RECEIVER__TLS_KEY_FILE": str(files.server_key),
            "FIONA_RECEIVER__TLS_CA_FILE": str(files.ca),
            "FIONA_RECEIVER__TLS_HANDSHAKE_TIMEOUT_SECONDS": str(HANDSHAKE_TIMEOUT),
            "FIONA_RECEIVER__IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
            "FIONA_RECEIVER__ALLOWED_CALLING_AETS": ALLOWED,
            **{f"FIONA_RECEIVER__{key.upper()}": value for key, value in tls.items()},
        }
        super().__init__(root / "rx", root / "data", nats_url, extra, port=plain)


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return mutual_tls(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def receiver(
    tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer, files: TlsFiles
) -> Iterator[TlsReceiver]:
    with TlsReceiver(tmp_path_factory.mktemp("tls-rx"), nats_server.url, files) as rx:
        yield rx
        assert "Traceback" not in rx.log_text()


def tls_args(files: TlsFiles) -> list[str]:
    """DCMTK options: our client certificate and key, and the CA of the receiver's."""
    return ["+tls", str(files.client_key), str(files.client_cert), "+cf", str(files.ca)]


def echo(port: int, args: Sequence[str] = (), calling_aet: str = "ECHOSCU") -> bool:
    command = [dcmtk("echoscu"), "-aet", calling_aet, "-aec", "FIONA", "-to", "10", *args]
    done = subprocess.run(
        [*command, "127.0.0.1", str(port)],
        capture_output=True,
        env=dcmtk_env(),  # TCP_NODELAY=1
        timeout=30,
    )
    return done.returncode == 0


def store(port: int, paths: list[Path], args: Sequence[str], aet: str = "STORESCU") -> bool:
    result = store_scu(
        "127.0.0.1", port, paths, calling_aet=aet, extra_args=["-to", "10", *args], check=False
    )
    return result.returncode == 0


# ------------------------------------------------------------------------------ senders


def test_storescu_over_tls_is_archived(
    tmp_path: Path, receiver: TlsReceiver, files: TlsFiles
) -> None:
    before = len(receiver.archived())
    assert store(receiver.tls_port, write_series(tmp_path / "in", 2), tls_args(files))
    assert len(receiver.archived()) == before + 2  # acknowledged: already in the archive
    assert echo(receiver.tls_port, tls_args(files))
    assert echo(receiver.port)  # the plain port serves as before


def test_access_rules_apply_after_the_handshake(
    tmp_path: Path, receiver: TlsReceiver, files: TlsFiles
) -> None:
    before = receiver.metric("fiona_receiver_associations_total", outcome="rejected_calling_aet")
    assert not echo(receiver.tls_port, tls_args(files), calling_aet="INTRUDER")
    after = receiver.metric("fiona_receiver_associations_total", outcome="rejected_calling_aet")
    assert after == before + 1


def test_fionas_own_client_sends_over_tls(receiver: TlsReceiver, files: TlsFiles) -> None:
    """The exporter's TLS (pynetdicom, TLS 1.3 here) against the receiver's."""
    context = Tls(files.ca, files.client_cert, files.client_key).context()
    ae = AE(ae_title="FIONAPY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context("1.2.840.10008.1.1")
    tls_args = (context, "127.0.0.1")
    assoc = ae.associate("127.0.0.1", receiver.tls_port, ae_title="FIONA", tls_args=tls_args)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


# ------------------------------------------------------------------------------ refused


def _refusals(receiver: TlsReceiver) -> float:
    return receiver.metric("fiona_receiver_associations_total", outcome=REFUSED)


def test_sender_without_a_certificate_is_refused_at_the_handshake(
    tmp_path: Path, receiver: TlsReceiver, files: TlsFiles
) -> None:
    before, archived = _refusals(receiver), len(receiver.archived())
    anonymous = ["+tla", "+cf", str(files.ca)]
    assert not store(receiver.tls_port, write_series(tmp_path / "in", 1), anonymous)
    assert len(receiver.archived()) == archived
    wait_until(lambda: _refusals(receiver) == before + 1, timeout=5, what="refusal counted")
    assert "TLS handshake failed" in receiver.log_text()


def test_certificate_of_another_ca_is_refused(
    tmp_path: Path, receiver: TlsReceiver, files: TlsFiles
) -> None:
    stranger = mutual_tls(tmp_path)  # a CA the receiver does not know
    args = ["+tls", str(stranger.client_key), str(stranger.client_cert), "+cf", str(files.ca)]
    before = _refusals(receiver)
    assert not echo(receiver.tls_port, args)
    wait_until(lambda: _refusals(receiver) == before + 1, timeout=5, what="refusal counted")


def test_plain_dicom_on_the_tls_port_fails_cleanly(receiver: TlsReceiver, files: TlsFiles) -> None:
    started = time.monotonic()
    assert not echo(receiver.tls_port)
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 5
    assert receiver.running
    assert echo(receiver.tls_port, tls_args(files))


def test_silent_peers_do_not_hold_up_other_associations(
    tmp_path: Path, receiver: TlsReceiver, files: TlsFiles
) -> None:
    silent = [socket.create_connection(("127.0.0.1", receiver.tls_port)) for _ in range(5)]
    try:
        started = time.monotonic()
        assert store(receiver.tls_port, write_series(tmp_path / "in", 1), tls_args(files))
        # Done while the silent ones still wait for their handshake: nobody waited for them.
        for sock in silent:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
            sock.setblocking(True)
        for sock in silent:  # then each is dropped once the handshake timeout has passed
            sock.settimeout(HANDSHAKE_TIMEOUT + 10)
            assert sock.recv(1) == b""
        assert time.monotonic() - started >= HANDSHAKE_TIMEOUT - 0.5
    finally:
        for sock in silent:
            sock.close()


def test_an_association_silent_after_the_handshake_is_aborted_when_idle(
    receiver: TlsReceiver, files: TlsFiles
) -> None:
    context = Tls(files.ca, files.client_cert, files.client_key).context()
    raw = socket.create_connection(("127.0.0.1", receiver.tls_port), timeout=IDLE_TIMEOUT + 10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(associate_rq(calling="ECHOSCU"))
        assert sock.recv(1) == b"\x02"  # A-ASSOCIATE-AC
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(4096):  # then silence, until the receiver gives up
            received += chunk
        assert time.monotonic() - started >= IDLE_TIMEOUT - 0.5
        assert received[-10:-4] == bytes([0x07, 0, 0, 0, 0, 4])  # an A-ABORT came last


# ------------------------------------------------------------------------------ optional


def test_client_certificates_can_be_made_optional(
    tmp_path: Path, nats_server: NatsServer, files: TlsFiles
) -> None:
    optional = {"tls_require_client_cert": "false"}
    with TlsReceiver(tmp_path, nats_server.url, files, **optional) as rx:
        assert echo(rx.tls_port, ["+tla", "+cf", str(files.ca)])
        assert echo(rx.tls_port, tls_args(files))  # a certificate shown is still checked
        (tmp_path / "other").mkdir()
        stranger = mutual_tls(tmp_path / "other")
        args = ["+tls", str(stranger.client_key), str(stranger.client_cert), "+cf", str(files.ca)]
        assert not echo(rx.tls_port, args)


# ------------------------------------------------------------------------------ start-up


def start_receiver(tmp_path: Path, settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    plain, tls_port, http = free_ports(3)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "FIONA_DATADIR": str(tmp_path / "data"),
        "FIONA_DICOMPORT": str(plain),
        "FIONA_NATS_URL": "nats://127.0.0.1:1",
        "FIONA_RECEIVER__HTTP_PORT": str(http),
        "FIONA_RECEIVER__TLS_PORT": str(tls_port),
        **settings,
    }
    command = [sys.executable, "-m", "fiona_cli", "run", "receiver"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def _files(files: TlsFiles, **changed: Path) -> dict[str, str]:
    chosen = {"cert": files.server_cert, "key": files.server_key, "ca": files.ca, **changed}
    return {f"FIONA_RECEIVER__TLS_{k.upper()}_FILE": str(v) for k, v in chosen.items()}


@pytest.mark.parametrize("which", ["cert", "key", "ca"])
def test_a_missing_file_stops_the_receiver_with_one_line(
    tmp_path: Path, files: TlsFiles, which: str
) -> None:
    missing = tmp_path / f"no-{which}.pem"
    done = start_receiver(tmp_path, _files(files, **{which: missing}))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert f"RECEIVER.TLS_{which.upper()}_FILE" in done.stderr
    assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_bad_key_is_named_but_never_shown(tmp_path: Path, files: TlsFiles) -> None:
    key = tmp_path / "bad.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n")
    done = start_receiver(tmp_path, _files(files, key=key))
    assert done.returncode == 2
    assert str(key) in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert "SECRETKEYMATERIAL" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout


def test_a_tls_port_without_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    done = start_receiver(tmp_path, {})
    assert done.returncode == 2
    assert "RECEIVER.TLS_PORT needs RECEIVER.TLS_CERT_FILE" in done.stderr
