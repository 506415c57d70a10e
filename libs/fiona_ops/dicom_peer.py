"""A DICOM node FIONA talks to as a client (a PACS, a destination): association and C-ECHO.

TLS as for the exporter's destinations (the node's certificate and host name verified, TLS 1.2
or later, FIONA's own certificate when one is configured) and TCP_NODELAY on the socket, which
pynetdicom leaves off (each request would otherwise wait on Nagle's algorithm).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from fiona_common.dicom_client import Tls, no_delay
from fiona_common.errors import Unavailable
from fiona_common.settings import PacsNode

SUCCESS = 0x0000


@dataclass(frozen=True)
class DicomPeer:
    """Where a node is and how FIONA introduces itself to it."""

    name: str  # for messages and metric labels: a configured name or AE title, no identifiers
    aet: str
    host: str
    port: int
    calling_aet: str = "FIONA"
    tls: Tls | None = None
    timeout_seconds: float = 30.0

    @classmethod
    def of_node(cls, name: str, node: PacsNode, default_calling_aet: str) -> "DicomPeer":
        tls = None
        if node.tls:
            tls = Tls(node.tls_ca_file, node.tls_cert_file, node.tls_key_file)
        return cls(
            name=name,
            aet=node.aet,
            host=node.host,
            port=node.port,
            calling_aet=node.calling_aet or default_calling_aet,
            tls=tls,
            timeout_seconds=node.timeout_seconds,
        )

    def describe(self) -> str:
        return f"{self.name} ({self.aet}@{self.host}:{self.port}{', TLS' if self.tls else ''})"


@contextmanager
def association(
    peer: DicomPeer,
    contexts: list[str],
    ext_neg: list[Any] | None = None,
    handlers: list[Any] | None = None,
) -> Iterator[Association]:
    """An established association proposing ``contexts``; released (or aborted) afterwards.

    Raises:
        Unavailable: the node did not accept (unreachable, refused, aborted).
    """
    ae = AE(ae_title=peer.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout_seconds
    for context in contexts:
        ae.add_requested_context(context)
    tls_args = (peer.tls.context(), peer.host) if peer.tls is not None else None
    connected: list[bool] = []  # pynetdicom says "aborted" for a refused connection too
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.aet,
        ext_neg=ext_neg,
        evt_handlers=[*(handlers or []), (evt.EVT_CONN_OPEN, lambda _e: connected.append(True))],
        tls_args=tls_args,
    )
    if not assoc.is_established:
        raise Unavailable(f"{peer.describe()}: {_why_not(assoc, bool(connected))}")
    no_delay(assoc)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _why_not(assoc: Association, connected: bool) -> str:
    if not connected:
        return "not reachable (connection refused or timed out)"
    if assoc.is_rejected:
        return "refused the association (is FIONA's calling AE title known to it?)"
    if assoc.is_aborted:
        return "aborted the association (TLS or protocol mismatch?)"
    return "no answer to the association request"


def echo(peer: DicomPeer) -> float:
    """C-ECHO the node; seconds from connecting to the echo's answer (TCP, TLS, association).

    Raises:
        Unavailable: no association, or no success status.
    """
    started = time.monotonic()
    with association(peer, [Verification]) as assoc:
        status = assoc.send_c_echo()
        rtt = time.monotonic() - started
    code = int(status.Status) if status is not None and "Status" in status else None
    if code != SUCCESS:
        answer = "no answer" if code is None else f"status 0x{code:04X}"
        raise Unavailable(f"{peer.describe()}: C-ECHO failed ({answer})")
    return rtt
