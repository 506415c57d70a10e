"""What the receiver does with associations and objects (the acceptor's callbacks).

They run on each association's own thread, so they are synchronous; the C-STORE handler
answers Success only once the object is durable in the archive.
"""

import logging
from dataclasses import dataclass, field

from fiona_common.dicom_status import StoreStatus
from fiona_common.messages import StoredVia
from services.receiver import metrics
from services.receiver.access import Admission, Switch, admit
from services.receiver.dicom_server import AssociationCallbacks, Peer, StoreRequest
from services.receiver.ingest import Incoming, IngestDeps, Origin, Result, timed_ingest
from services.receiver.reserve import DiskReserve
from services.receiver.spool import Spool

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
_REJECTIONS = {
    Admission.REJECTED_DISABLED: (0x02, 0x03, 0x01),  # transient: temporary congestion
    Admission.REJECTED_CALLING_AET: (0x01, 0x01, 0x03),  # calling AE title not recognized
    Admission.REJECTED_PEER: (0x01, 0x01, 0x01),  # no reason given
}
_STATUS = {
    Result.STORED: StoreStatus.SUCCESS,
    Result.DUPLICATE: StoreStatus.SUCCESS,
    Result.QUARANTINED: StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    Result.NO_SPACE: StoreStatus.OUT_OF_RESOURCES,
}


@dataclass
class ListenerHandlers:
    """The callbacks of one DICOM listener, bound to its dependencies."""

    deps: IngestDeps
    switch: Switch = field(default_factory=Switch)
    reserve: DiskReserve | None = None

    def __post_init__(self) -> None:
        self.switch.listener = self.deps.listener.name

    def callbacks(self) -> AssociationCallbacks:
        return AssociationCallbacks(
            admit=self.on_association_requested,
            store=self.on_c_store,
            opened=self.on_opened,
            closed=self.on_closed,
            refuse_store=self.on_store_requested,
        )

    def on_association_requested(self, peer: Peer) -> tuple[int, int, int] | None:
        decision = admit(
            peer.calling_aet, peer.address, self.deps.listener.access, self.switch.enabled
        )
        metrics.ASSOCIATIONS.labels(self.deps.listener.name, decision).inc()
        if decision is Admission.ACCEPTED:
            return None
        log.info(
            "association rejected", extra={"reason": decision, "calling_aet": peer.calling_aet}
        )
        return _REJECTIONS[decision]

    def on_opened(self, peer: Peer) -> None:
        metrics.ASSOCIATIONS_ACTIVE.labels(self.deps.listener.name).inc()

    def on_closed(self, peer: Peer) -> None:
        metrics.ASSOCIATIONS_ACTIVE.labels(self.deps.listener.name).dec()

    def on_store_requested(self, request: StoreRequest, peer: Peer) -> int | None:
        """Refuse the object before its dataset is written while the disk reserve is reached."""
        if self.reserve is None or self.reserve.has_room():
            return None
        listener = self.deps.listener
        called = peer.called_aet if peer.called_aet == listener.aetitle else "other"
        metrics.REFUSED_DISK_RESERVE.labels(listener.name).inc()
        metrics.OBJECTS.labels(listener.name, called, Result.NO_SPACE).inc()
        return int(StoreStatus.OUT_OF_RESOURCES)

    def on_c_store(self, spool: Spool, request: StoreRequest, peer: Peer) -> int:
        try:
            if spool.error is not None or spool.path is None:
                log.error(
                    "could not spool received object",
                    extra={"error": getattr(spool.error, "strerror", "")},
                )
                metrics.OBJECTS.labels(self.deps.listener.name, "-", Result.NO_SPACE).inc()
                return int(StoreStatus.OUT_OF_RESOURCES)
            origin = Origin(
                calling_aet=peer.calling_aet,
                called_aet=peer.called_aet,
                peer_address=peer.address,
                via=StoredVia.DICOM,
            )
            received = Incoming(spool.path, origin, request.sop_instance_uid, spool.head, spool.fd)
            result = timed_ingest(received, self.deps)
            return int(_STATUS[result])
        except Exception:  # the C-STORE boundary: the sender must get an answer, never a hang
            log.exception("C-STORE handler failed")
            return int(StoreStatus.PROCESSING_FAILURE)
