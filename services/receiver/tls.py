"""DICOM TLS on the receiver (PS3.15 B.1, the BCP 195 profiles): the server's SSL context, made
from PEM files at start, and the handshake, done on the association's own thread.

The handshake never runs in the accept loop: a peer that connects and stays silent, or speaks
plain DICOM to the TLS port, costs its own thread until the handshake timeout, nothing more.
"""

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from fiona_common.errors import ConfigError
from fiona_common.settings import Settings
from services.receiver import metrics

log = logging.getLogger(__name__)

# fiona_receiver_associations_total's outcome for a connection that failed its TLS handshake.
HANDSHAKE_FAILED = "rejected_tls_handshake"


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The SSL context of the TLS port (None: no TLS port). Raises ConfigError, naming the
    setting and the file, when a file is missing, unreadable or not what it should be."""
    rx = settings.receiver
    if rx.tls_port is None or rx.tls_cert_file is None or rx.tls_key_file is None:
        return None
    if rx.tls_port in {listener.port for listener in settings.listeners()}:
        # With RECEIVER.WORKERS > 1 (SO_REUSEPORT) both would bind and share the connections.
        raise ConfigError(f"RECEIVER.TLS_PORT {rx.tls_port} is a DICOMPORT already: pick another")
    _check_readable("RECEIVER.TLS_CERT_FILE", rx.tls_cert_file)
    _check_readable("RECEIVER.TLS_KEY_FILE", rx.tls_key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_certificate(context, rx.tls_cert_file, rx.tls_key_file)
    if rx.tls_ca_file is not None:
        _check_readable("RECEIVER.TLS_CA_FILE", rx.tls_ca_file)
        try:
            context.load_verify_locations(cafile=rx.tls_ca_file)
        except ssl.SSLError as err:
            raise ConfigError(
                f"RECEIVER.TLS_CA_FILE: {rx.tls_ca_file} holds no PEM CA certificate ({err.reason})"
            ) from None
    if rx.tls_require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
    elif rx.tls_ca_file is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _check_readable(setting: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise ConfigError(f"{setting}: cannot read {path} ({err.strerror or err})") from None


def _encrypted_key() -> str:
    # OpenSSL would otherwise prompt on the terminal, which a service does not have.
    raise ConfigError("is encrypted")


def _load_certificate(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    # The messages name the files only: an SSLError's text never holds the key, and ours neither.
    try:
        context.load_cert_chain(cert, key, password=_encrypted_key)
    except ConfigError:
        raise ConfigError(
            f"RECEIVER.TLS_KEY_FILE: {key} is encrypted; FIONA needs an unencrypted key "
            "(protect it by file permissions)"
        ) from None
    except ssl.SSLError as err:
        raise ConfigError(
            f"RECEIVER.TLS_CERT_FILE/TLS_KEY_FILE: {cert} and {key} are no matching PEM "
            f"certificate and key ({err.reason or 'unreadable'})"
        ) from None


def handshake(
    sock: socket.socket, context: ssl.SSLContext, timeout_seconds: float, address: str
) -> ssl.SSLSocket | None:
    """``sock`` after a server-side TLS handshake, or None (logged, the socket closed) when the
    peer failed it: no or an untrusted certificate, plain TCP, silence beyond the timeout."""
    sock.settimeout(timeout_seconds)
    try:
        tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except OSError as err:  # the peer already left
        _log_failure(address, err)
        return None
    try:
        tls_sock.do_handshake()
    except OSError as err:  # ssl.SSLError, TimeoutError and resets are all OSErrors
        _log_failure(address, err)
        close(tls_sock)
        return None
    return tls_sock


def failure_counter(listener: str) -> Callable[[str], None]:
    """The ``tls_failed`` callback of ``listener``: counts the refused connection."""

    def count(address: str) -> None:
        metrics.ASSOCIATIONS.labels(listener, HANDSHAKE_FAILED).inc()

    return count


def _log_failure(address: str, err: OSError) -> None:
    reason = "timeout" if isinstance(err, TimeoutError) else None
    reason = reason or getattr(err, "reason", None) or type(err).__name__
    log.info("TLS handshake failed", extra={"peer": address, "reason": reason})


def close(tls_sock: ssl.SSLSocket) -> None:
    """Close like socketserver closes a plain connection (the wrapped socket is no longer its
    to close): half-close first, so an A-ABORT sent last is not lost to a reset."""
    with contextlib.suppress(OSError):
        tls_sock.shutdown(socket.SHUT_WR)
    tls_sock.close()
