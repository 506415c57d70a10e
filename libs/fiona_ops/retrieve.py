"""``fiona pacs move|get``: bring studies from a PACS into FIONA's normal pipeline.

For each study: ask the PACS how many instances the study and each series hold (C-FIND),
record that in the ``fiona_expected`` bucket so the arrival service completes the study as soon
as they all arrived (services/arrival/expected.py), then retrieve it. C-MOVE sends it to
FIONA's own listener (the site's AE title, or the node's ``move_aet``). C-GET stores each object
into the site's ``inbox/`` (durably, appearing atomically), from where the receiver imports it;
so ``get`` runs on the machine that holds the data directory. A retrieve that reports failed
sub-operations withdraws the counts, and the study completes by its quiet period instead.
"""

import asyncio
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pynetdicom.events import Event as DimseEvent

from fiona_common.bus import NATS_DOWN, Bus
from fiona_common.dicom_status import StoreStatus
from fiona_common.errors import BadInput, FionaError, Unavailable
from fiona_common.layout import DIR_MODE, Layout, is_valid_uid, safe_component, write_atomic
from fiona_common.nats_auth import NatsTarget
from fiona_common.settings import Listener
from fiona_ops import pacs
from fiona_ops.dicom_peer import DicomPeer
from fiona_ops.nats_once import connect_once
from fiona_ops.query import Level, build_query
from services.arrival.announcements import announce, expected_bucket
from services.arrival.expected import ExpectedStudy


@dataclass(frozen=True)
class Target:
    """Where retrieved studies go: a listener (site) and the announcing node's name."""

    listener: Listener
    node: str
    nats: NatsTarget


def study_uids(peer: DicomPeer, study: str | None, accession: str | None) -> list[str]:
    """The studies to retrieve: the one given, or those with the accession number."""
    if study is not None:
        if not is_valid_uid(study):
            raise BadInput("bad_uid", f"{study!r} is not a valid Study Instance UID")
        return [study]
    query, _ = build_query(Level.STUDY, {"AccessionNumber": accession or ""})
    found = [str(a.get("StudyInstanceUID", "")) for a in pacs.find(peer, query)]
    uids = list(dict.fromkeys(uid for uid in found if is_valid_uid(uid)))
    if not uids:
        raise FionaError(f"{peer.describe()}: no study with accession number {accession!r}")
    return uids


def announced_counts(peer: DicomPeer, study_uid: str, target: Target) -> ExpectedStudy:
    """The instance counts of the study and its series, as the PACS reports them."""
    study, _ = build_query(Level.STUDY, {"StudyInstanceUID": study_uid})
    answers = pacs.find(peer, study)
    if not answers:
        raise FionaError(f"{peer.describe()}: has no study {study_uid}")
    total = _count(answers[0].get("NumberOfStudyRelatedInstances"))
    query, _ = build_query(Level.SERIES, {"StudyInstanceUID": study_uid})
    series: dict[str, int] = {}
    for answer in pacs.find(peer, query):
        uid, count = str(answer.get("SeriesInstanceUID", "")), _count(answer.get(_SERIES_COUNT))
        if is_valid_uid(uid) and count:
            series[uid] = count
    if total is None and series:
        total = sum(series.values())
    return ExpectedStudy(
        site=target.listener.name,
        study_uid=study_uid,
        node=target.node,
        instances=total,
        series=series,
        recorded_at=datetime.now(UTC),
    )


_SERIES_COUNT = "NumberOfSeriesRelatedInstances"


def _count(value: object) -> int | None:
    """A positive count from an IS value ("5", 5, "" or None)."""
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if number > 0 else None


def record(nats: NatsTarget | str, doc: ExpectedStudy) -> None:
    """Put the counts into the ``fiona_expected`` bucket.

    Raises:
        Unavailable: NATS is not reachable (within a few seconds: an admin is waiting).
    """

    async def put() -> None:
        nc = await connect_once(nats, "fiona-pacs", NATS_SECONDS)
        bus = Bus(nc=nc, js=nc.jetstream())
        try:
            await announce(await expected_bucket(bus), doc)
        except NATS_DOWN as err:
            raise Unavailable(f"NATS at {nats}: {type(err).__name__}") from None
        finally:
            await bus.close()

    asyncio.run(put())


NATS_SECONDS = 3.0


def withdrawn(doc: ExpectedStudy) -> ExpectedStudy:
    """The same study without counts: it completes by its quiet period."""
    return doc.model_copy(update={"instances": None, "series": {}})


class InboxSink:
    """C-GET's storage SCP: each object into ``inbox/<folder>/<SOPInstanceUID>.dcm``.

    Written as received (Part 10, the PACS's transfer syntax, no decoding), fsynced and renamed
    into place before the sub-operation is answered Success; the receiver imports it from there.
    """

    def __init__(self, layout: Layout, node: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.folder = layout.inbox_dir / f"pacs-{safe_component(node)}-{stamp}-{os.getpid()}"
        self.stored = 0
        self._numbers = itertools.count(1)

    def __call__(self, event: DimseEvent) -> int:
        sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        name = sop_uid if is_valid_uid(sop_uid) else f"object-{next(self._numbers)}"
        try:
            self.folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            write_atomic(self.folder / f"{name}.dcm", event.encoded_dataset())
        except OSError:
            return int(StoreStatus.OUT_OF_RESOURCES)
        self.stored += 1
        return int(StoreStatus.SUCCESS)


Retrieve = Callable[[DicomPeer, str], pacs.Retrieved]


def retrieve_studies(
    peer: DicomPeer, uids: list[str], target: Target, fetch: Retrieve, warn: Callable[[str], None]
) -> list[tuple[str, ExpectedStudy, pacs.Retrieved]]:
    """Announce and retrieve each study; (uid, counts, outcome) per study."""
    outcomes = []
    for uid in uids:
        doc = announced_counts(peer, uid, target)
        recorded = _try_record(target.nats, doc, warn)
        try:
            outcome = fetch(peer, uid)
        except FionaError:
            if recorded:
                _try_record(target.nats, withdrawn(doc), warn)
            raise
        if recorded and not outcome.ok:
            _try_record(target.nats, withdrawn(doc), warn)
        outcomes.append((uid, doc, outcome))
    return outcomes


def _try_record(nats: NatsTarget, doc: ExpectedStudy, warn: Callable[[str], None]) -> bool:
    try:
        record(nats, doc)
    except Unavailable as err:
        warn(f"counts not recorded ({err}); the study completes by its quiet period")
        return False
    return True


def inbox_of(listener: Listener) -> Layout:
    """The site's layout, once its ``inbox/`` is known to exist (C-GET writes there)."""
    layout = Layout(listener.datadir)
    if not Path(layout.inbox_dir).is_dir():
        raise FionaError(
            f"no inbox at {layout.inbox_dir}: run 'fiona pacs get' where FIONA's data are "
            "(--data DIR), or use 'fiona pacs move'"
        )
    return layout
