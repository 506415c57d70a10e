"""Delivery to a DICOM node by C-STORE, one association for many objects.

Each object is offered in its own transfer syntax (no recompression). A status tells whether a
failure is worth retrying: "out of resources" and lost connections are transient, a refused
SOP class or dataset is permanent for that object. C-STORE goes through the exporter's own
SCU (services/exporter/store_scu.py, which says why); C-FIND through pynetdicom.
"""

import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

from fiona_common.dicom_client import Tls, no_delay
from fiona_common.dicomfile import FileMeta, read_file_meta
from services.exporter import metrics
from services.exporter.store_scu import PeerGone, StoreAssociation

log = logging.getLogger(__name__)
MAX_CONTEXTS = 128  # the DICOM limit of presentation contexts in one association


class Sent(StrEnum):
    OK = "ok"
    TRANSIENT = "transient"  # try again later
    PERMANENT = "permanent"  # the destination will never take this object


@dataclass(frozen=True)
class Node:
    aet: str
    host: str
    port: int
    calling_aet: str = "FIONA"
    max_bytes_per_second: int | None = None
    tls: Tls | None = None

    def associate(self, ae: AE) -> Association:
        tls_args = (self.tls.context(), self.host) if self.tls is not None else None
        assoc = ae.associate(self.host, self.port, ae_title=self.aet, tls_args=tls_args)
        if assoc.is_established:
            no_delay(assoc)
        return assoc


@dataclass(frozen=True)
class Outcome:
    path: Path
    sent: Sent
    status: int | None  # the DIMSE status, None when no answer came


def classify_status(status: int) -> Sent:
    if status == 0x0000 or 0xB000 <= status <= 0xBFFF:
        return Sent.OK  # success, or success with a warning (coercion, elements discarded)
    if 0xA700 <= status <= 0xA7FF:
        return Sent.TRANSIENT  # out of resources
    return Sent.PERMANENT  # refused SOP class, dataset mismatch, cannot understand...


def send_files(files: list[Path], node: Node, timeout: float = 30.0) -> list[Outcome]:
    """C-STORE ``files`` to ``node`` on as few associations as the contexts allow."""
    metas = {f: read_file_meta(f) for f in files}
    contexts = list(dict.fromkeys(context_of(m) for m in metas.values()))
    outcomes: list[Outcome] = []
    for start in range(0, len(contexts), MAX_CONTEXTS):
        group = contexts[start : start + MAX_CONTEXTS]
        wanted = set(group)
        batch = {f: m for f, m in metas.items() if context_of(m) in wanted}
        outcomes.extend(_send_batch(batch, group, node, timeout))
    return outcomes


def context_of(meta: FileMeta) -> tuple[str, str]:
    """The presentation context a file is sent on: its SOP class in its own transfer syntax."""
    return (meta.sop_class, meta.transfer_syntax)


def _send_batch(
    files: dict[Path, FileMeta], contexts: list[tuple[str, str]], node: Node, timeout: float
) -> list[Outcome]:
    try:
        assoc = StoreAssociation.open(node, contexts, timeout)
    except PeerGone as err:
        log.warning(
            "association refused or failed", extra={"destination": node.aet, "reason": str(err)}
        )
        return [Outcome(f, Sent.TRANSIENT, None) for f in files]
    outcomes = []
    started, sent_bytes = time.monotonic(), 0
    try:
        for path, meta in files.items():
            if not assoc.is_established:  # the peer went away mid-study
                outcomes.append(Outcome(path, Sent.TRANSIENT, None))
                continue
            if context_of(meta) not in assoc.accepted:
                # The node refused the SOP class or the file's transfer syntax (not transcoded).
                log.warning(
                    "presentation context not accepted",
                    extra={"destination": node.aet, "sop_class": meta.sop_class},
                )
                outcomes.append(Outcome(path, Sent.PERMANENT, None))
                continue
            before = time.monotonic()
            try:
                status = assoc.store(path, meta)  # its bytes as they are
            except PeerGone as err:
                log.warning("association lost", extra={"destination": node.aet, "reason": str(err)})
                outcomes.append(Outcome(path, Sent.TRANSIENT, None))
                continue
            metrics.STORE_SECONDS.observe(time.monotonic() - before)
            sent_bytes += path.stat().st_size
            _keep_rate(node.max_bytes_per_second, sent_bytes, started)
            sent = classify_status(status) if status is not None else Sent.TRANSIENT
            outcomes.append(Outcome(path, sent, status))
    finally:
        assoc.release()
    return outcomes


def _keep_rate(limit: int | None, sent_bytes: int, started: float) -> None:
    """Sleep so that the bytes sent so far stay within ``limit`` bytes per second."""
    if limit:
        ahead = sent_bytes / limit - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def count_study_instances(node: Node, study_uid: str, timeout: float = 30.0) -> int | None:
    """Instances the node holds for the study (C-FIND, Study Root, STUDY level); None when the
    node does not answer queries."""
    ae = AE(ae_title=node.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = node.associate(ae)
    if not assoc.is_established:
        return None
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.NumberOfStudyRelatedInstances = ""
    found: int | None = 0
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            code = int(status.Status) if "Status" in status else None
            if code in (0xFF00, 0xFF01) and identifier is not None:
                value = identifier.get("NumberOfStudyRelatedInstances")
                found = int(value) if value not in (None, "") else None
            elif code is None or code >= 0xA000:
                found = None  # refused or failed: no verdict
    finally:
        if assoc.is_established:
            assoc.release()
    return found
