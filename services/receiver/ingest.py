"""The one path by which an object enters FIONA, whether by C-STORE or through ``inbox/``.

Read its identity (header only), archive it durably, queue its "instance stored" event. Whatever
cannot be archived is kept in quarantine with the reason: nothing is dropped silently.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from fiona_common.errors import BadInput
from fiona_common.layout import Layout
from fiona_common.logs import short_hash
from fiona_common.messages import InstanceStored, StoredVia
from fiona_common.quarantine import quarantine
from fiona_common.settings import Listener
from services.receiver import metrics
from services.receiver.archive import ObjectIdentity, StoreOutcome, read_identity, store
from services.receiver.header import DatasetHead
from services.receiver.publisher import EventPublisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Where an object came from (calling AE, called AE, peer address, way in)."""

    calling_aet: str
    called_aet: str
    peer_address: str
    via: StoredVia


class Result(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    NO_SPACE = "no_space"


@dataclass
class IngestDeps:
    """What ingesting needs for one listener (one data directory)."""

    listener: Listener
    layout: Layout
    publisher: EventPublisher


@dataclass(frozen=True)
class Incoming:
    """One complete object waiting to be archived, and what is known about it already."""

    path: Path
    origin: Origin
    expected_sop_uid: str | None = None  # the C-STORE request's Affected SOP Instance UID
    head: DatasetHead | None = None  # the dataset's first bytes, kept while receiving
    fd: int | None = None  # an open descriptor of ``path``


def ingest(obj: Incoming, deps: IngestDeps) -> Result:
    """Archive ``obj`` (its file is left in place) and queue its event.

    Raises:
        OSError: the archive could not be written (full disk...); nothing was archived.
    """
    received_at = datetime.now(UTC)
    try:
        identity = read_identity(obj.path, obj.head)
        expected = obj.expected_sop_uid
        if expected is not None and identity.sop_uid != expected.strip("\0 "):
            raise BadInput("sop_uid_mismatch", "dataset SOP Instance UID differs from request")
        stored = store(deps.layout, obj.path, identity, obj.fd)
    except BadInput as err:
        folder = quarantine(
            deps.layout,
            code=err.code,
            message=str(err),
            source=obj.path,
            context={"calling_aet": obj.origin.calling_aet, "via": obj.origin.via},
        )
        metrics.QUARANTINED.labels(err.code).inc()
        log.warning(
            "object quarantined",
            extra={
                "reason": err.code,
                "folder": folder.name,
                "calling_aet": obj.origin.calling_aet,
            },
        )
        return Result.QUARANTINED
    if stored.outcome is StoreOutcome.CONFLICT:
        quarantine(
            deps.layout,
            code="conflicting_duplicate",
            source=obj.path,
            message="an object with these UIDs but different content is archived",
        )
        metrics.QUARANTINED.labels("conflicting_duplicate").inc()
        log.warning(
            "conflicting resend kept in quarantine", extra={"sop": short_hash(identity.sop_uid)}
        )
        return Result.DUPLICATE
    if stored.outcome is StoreOutcome.DUPLICATE:
        metrics.DUPLICATES.labels(deps.listener.name).inc()
        return Result.DUPLICATE
    archive_path = deps.layout.relative(stored.path)
    metrics.BYTES.labels(deps.listener.name, _called(obj, deps), Result.STORED).inc(
        stored.size_bytes
    )
    deps.publisher.submit(
        stored_event(
            identity, deps.listener.name, archive_path, stored.size_bytes, obj.origin, received_at
        )
    )
    return Result.STORED


def stored_event(
    identity: ObjectIdentity,
    site: str,
    archive_path: str,
    size_bytes: int,
    origin: Origin,
    received_at: datetime,
) -> InstanceStored:
    """The "instance stored" event of an archived object."""
    return InstanceStored(
        site=site,
        study_uid=identity.study_uid,
        series_uid=identity.series_uid,
        sop_uid=identity.sop_uid,
        sop_class_uid=identity.sop_class_uid,
        transfer_syntax_uid=identity.transfer_syntax_uid,
        modality=identity.modality,
        archive_path=archive_path,
        size_bytes=size_bytes,
        calling_aet=origin.calling_aet,
        called_aet=origin.called_aet,
        peer_address=origin.peer_address,
        via=origin.via,
        received_at=received_at,
    )


def timed_ingest(obj: Incoming, deps: IngestDeps) -> Result:
    """:func:`ingest` with the receiver's counters; a full disk becomes :attr:`Result.NO_SPACE`."""
    started = time.perf_counter()
    try:
        result = ingest(obj, deps)
    except OSError as err:
        log.error("archive write failed", extra={"error": err.strerror or str(err)})
        result = Result.NO_SPACE
    metrics.OBJECTS.labels(deps.listener.name, _called(obj, deps), result).inc()
    metrics.STORE_SECONDS.observe(time.perf_counter() - started)
    return result


def _called(obj: Incoming, deps: IngestDeps) -> str:
    """The called-AE label: the listener's own title or "other" (senders choose it freely)."""
    return obj.origin.called_aet if obj.origin.called_aet == deps.listener.aetitle else "other"
