"""Query/Retrieve against a PACS (pynetdicom SCU, Study Root): C-FIND, C-MOVE, C-GET.

C-MOVE asks the PACS to send the study to FIONA's own listener, so it arrives as any sender's
study does. C-GET brings it back on the same association: FIONA acts as storage SCP for the
common storage SOP classes (pynetdicom's 120, with the uncompressed transfer syntaxes; a PACS
holding a compressed object converts it or reports that sub-operation failed) and hands each
object to ``store``, which answers the sub-operation's status.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydicom import Dataset
from pynetdicom import StoragePresentationContexts, build_role, evt
from pynetdicom.events import Event as DimseEvent
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from fiona_common.errors import BadInput, Unavailable
from fiona_ops.dicom_peer import DicomPeer, association

PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
MOVE_DESTINATION_UNKNOWN = 0xA801
REFUSED_OUT_OF_RESOURCES = (0xA700, 0xA701, 0xA702)

# Store handler of C-GET: the event of one sub-operation -> its C-STORE status.
StoreHandler = Callable[[DimseEvent], int]


@dataclass(frozen=True)
class Retrieved:
    """What a C-MOVE or C-GET reported at its end."""

    completed: int
    failed: int
    warning: int
    status: int

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS and self.failed == 0


def find(peer: DicomPeer, query: Dataset) -> list[Dataset]:
    """Every answer to a Study Root C-FIND.

    Raises:
        Unavailable: the node is unreachable, went away, or is out of resources.
        BadInput: the node refused the query.
    """
    model = StudyRootQueryRetrieveInformationModelFind
    with association(peer, [model]) as assoc:
        answers = []
        for status, identifier in assoc.send_c_find(query, model):
            code = _code(peer, status, "C-FIND")
            if code in PENDING and identifier is not None:
                answers.append(identifier)
            elif code not in PENDING and code != SUCCESS:
                raise _refused(peer, "C-FIND", code)
    return answers


def move(peer: DicomPeer, query: Dataset, destination: str) -> Retrieved:
    """C-MOVE what ``query`` matches to the AE title ``destination`` (FIONA's listener)."""
    model = StudyRootQueryRetrieveInformationModelMove
    with association(peer, [model]) as assoc:
        responses = assoc.send_c_move(query, destination, model)
        return _settle(peer, "C-MOVE", responses, destination)


def get(peer: DicomPeer, query: Dataset, store: StoreHandler) -> Retrieved:
    """C-GET what ``query`` matches; ``store`` keeps each object and answers its status."""
    model = StudyRootQueryRetrieveInformationModelGet
    storage = [cx.abstract_syntax for cx in StoragePresentationContexts if cx.abstract_syntax]
    roles = [build_role(uid, scp_role=True) for uid in storage]
    handlers = [(evt.EVT_C_STORE, store)]
    with association(peer, [model, *storage], ext_neg=roles, handlers=handlers) as assoc:
        return _settle(peer, "C-GET", assoc.send_c_get(query, model), None)


def study_query(level: str, study_uid: str) -> Dataset:
    """Identifier of a retrieve of one whole study."""
    query = Dataset()
    query.QueryRetrieveLevel = level
    query.StudyInstanceUID = study_uid
    return query


def _settle(
    peer: DicomPeer,
    what: str,
    responses: Iterator[tuple[Dataset, Dataset | None]],
    destination: str | None,
) -> Retrieved:
    last = Dataset()
    for status, _identifier in responses:
        code = _code(peer, status, what)
        last = status
        if code in PENDING:
            continue
        if code == MOVE_DESTINATION_UNKNOWN:
            raise BadInput(
                "move_destination_unknown",
                f"{peer.describe()} does not know the move destination {destination!r}: "
                "add FIONA's AE title, host and port to its DICOM nodes",
            )
        if code != SUCCESS and not 0xB000 <= code <= 0xBFFF:
            raise _refused(peer, what, code, destination)
    return Retrieved(
        completed=_number(last, "NumberOfCompletedSuboperations"),
        failed=_number(last, "NumberOfFailedSuboperations"),
        warning=_number(last, "NumberOfWarningSuboperations"),
        status=int(last.get("Status", SUCCESS)),
    )


def _number(status: Dataset, keyword: str) -> int:
    return int(status.get(keyword, 0) or 0)


def _code(peer: DicomPeer, status: Dataset, what: str) -> int:
    """The status of one response; an empty one means timeout, abort or a broken answer."""
    if "Status" not in status:
        raise Unavailable(f"{peer.describe()}: {what} got no answer (timeout or aborted)")
    return int(status.Status)


def _refused(peer: DicomPeer, what: str, code: int, destination: str | None = None) -> Exception:
    if code in REFUSED_OUT_OF_RESOURCES:
        return Unavailable(f"{peer.describe()}: {what} refused, out of resources (0x{code:04X})")
    # Some PACS (Orthanc) answer an unknown move destination with "unable to process".
    hint = ""
    if destination is not None and 0xC000 <= code <= 0xCFFF:
        hint = f" (does it know the move destination {destination!r}: AE title, host, port?)"
    return BadInput("refused", f"{peer.describe()}: {what} refused with status 0x{code:04X}{hint}")
