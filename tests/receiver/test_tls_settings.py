"""The receiver's TLS settings and the SSL context made from them (no processes)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from fiona_common.errors import ConfigError
from fiona_common.settings import ReceiverSettings, Settings
from services.receiver.tls import server_context
from tests.certificates import TlsFiles, mutual_tls


@pytest.fixture
def files(tmp_path: Path) -> TlsFiles:
    return mutual_tls(tmp_path)


def settings(files: TlsFiles | None = None, **receiver: object) -> Settings:
    tls: dict[str, object] = {"tls_port": 2762}
    if files is not None:
        tls |= {
            "tls_cert_file": files.server_cert,
            "tls_key_file": files.server_key,
            "tls_ca_file": files.ca,
        }
    return Settings(dicomport=11112, receiver=ReceiverSettings.model_validate(tls | receiver))


def test_no_tls_port_no_context() -> None:
    assert server_context(Settings()) is None


def test_mutual_tls_by_default_and_tls_1_2_at_least(files: TlsFiles) -> None:
    context = server_context(settings(files))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_optional_client_certificates(files: TlsFiles) -> None:
    context = server_context(settings(files, tls_require_client_cert=False))
    assert context is not None and context.verify_mode == ssl.CERT_OPTIONAL
    no_ca = settings(files, tls_require_client_cert=False, tls_ca_file=None)
    context = server_context(no_ca)
    assert context is not None and context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        ({"tls_port": None, "tls_ca_file": Path("ca.pem")}, "RECEIVER.TLS_PORT is not"),
        ({"tls_port": 2762}, "RECEIVER.TLS_PORT needs RECEIVER.TLS_CERT_FILE"),
        (
            {"tls_port": 2762, "tls_cert_file": Path("c"), "tls_key_file": Path("k")},
            "RECEIVER.TLS_REQUIRE_CLIENT_CERT needs RECEIVER.TLS_CA_FILE",
        ),
    ],
)
def test_inconsistent_settings_are_refused(receiver: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReceiverSettings.model_validate(receiver)


def test_tls_port_must_differ_from_the_dicom_ports(files: TlsFiles) -> None:
    with pytest.raises(ConfigError, match="is a DICOMPORT already"):
        server_context(settings(files, tls_port=11112))


def test_a_ca_file_without_a_certificate_is_named(files: TlsFiles) -> None:
    files.ca.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"RECEIVER\.TLS_CA_FILE: .*ca\.pem holds no PEM CA"):
        server_context(settings(files))


def test_an_encrypted_key_is_refused_without_a_prompt(files: TlsFiles, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(files.server_key), "-aes256", "-passout", "pass:x"],
        stdout=encrypted.open("wb"),
        check=True,
    )
    with pytest.raises(ConfigError, match="is encrypted; FIONA needs an unencrypted key"):
        server_context(settings(files, tls_key_file=encrypted))


def test_a_certificate_that_does_not_match_its_key(files: TlsFiles) -> None:
    with pytest.raises(ConfigError, match="no matching PEM certificate and key") as err:
        server_context(settings(files, tls_key_file=files.client_key))
    assert "BEGIN" not in str(err.value)
