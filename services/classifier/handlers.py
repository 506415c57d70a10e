"""``fiona.instance.stored`` -> trees, series summary, classification, ``fiona.series.updated``."""

import asyncio
import fcntl
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.js.kv import KeyValue
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from fiona_common.bus import Bus
from fiona_common.dicomfile import read_header as read_dataset_header
from fiona_common.errors import BadInput
from fiona_common.layout import Layout, write_atomic
from fiona_common.logs import short_hash
from fiona_common.messages import InstanceStored, SeriesUpdated
from services.classifier import metrics, trees
from services.classifier.rulebook import RuleBook
from services.classifier.rules import classify_image
from services.classifier.state import SeriesState, advance, series_key
from services.classifier.summary import merge, public_view

log = logging.getLogger(__name__)


@dataclass
class ClassifierDeps:
    layouts: dict[str, Layout]
    rules: RuleBook
    kv: KeyValue
    bus: Bus
    # One thread reads headers and makes links for every partition's batches in turn: that
    # work holds the GIL, and threads competing for it measured half the speed of one.
    reader: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="header-reader")
    )


async def on_instances_stored(
    events: list[InstanceStored], deps: ClassifierDeps
) -> list[BadInput | None]:
    """Index and classify a batch; one summary update and one event per series touched.

    Returns, per event, None or why it was refused (the bus terminates those).
    """
    loop = asyncio.get_running_loop()
    prepared = await loop.run_in_executor(deps.reader, prepare_batch, events, deps.layouts)
    outcomes: list[BadInput | None] = [p if isinstance(p, BadInput) else None for p in prepared]
    metrics.OBJECTS_INDEXED.labels("refused").inc(sum(1 for o in outcomes if o is not None))
    updates = []
    for indexes in _by_series(events).values():
        images = [p for p in (prepared[i] for i in indexes) if isinstance(p, Image)]
        if images:
            updates.append(update_series(images, deps))
    await asyncio.gather(*updates)  # series are independent: their KV round trips overlap
    return outcomes


def prepare_batch(
    events: list[InstanceStored], layouts: dict[str, Layout]
) -> list["Image | BadInput"]:
    """:func:`prepare` for each event; an event's own fault is returned, not raised."""
    prepared: list[Image | BadInput] = []
    studies: set[tuple[str, str]] = set()  # a study's participant link, once per batch
    for event in events:
        try:
            prepared.append(prepare(event, layouts, studies))
        except BadInput as refused:
            prepared.append(refused)
    return prepared


def _by_series(events: list[InstanceStored]) -> dict[tuple[str, str], list[int]]:
    groups: dict[tuple[str, str], list[int]] = {}
    for i, event in enumerate(events):
        groups.setdefault((event.site, event.series_uid), []).append(i)
    return groups


@dataclass(frozen=True)
class Image:
    """One stored instance, linked into the trees, with its header."""

    event: InstanceStored
    layout: Layout
    ds: Dataset
    index_seconds: float  # header read and links; classification time is added to it


def prepare(
    event: InstanceStored, layouts: dict[str, Layout], studies_linked: set[tuple[str, str]]
) -> Image:
    """Read the header and create the instance's links (blocking: on a worker thread)."""
    started = time.perf_counter()
    layout = layouts.get(event.site)
    if layout is None:
        raise BadInput("unknown_site", f"no data directory is configured for site {event.site}")
    archive_file = layout.resolve(event.archive_path)
    ds = read_header(archive_file)
    index_instance(layout, event, ds, archive_file, studies_linked)
    return Image(event, layout, ds, time.perf_counter() - started)


async def update_series(images: list[Image], deps: ClassifierDeps) -> None:
    """Fold the images into the series state; write and announce it if it changed."""
    first = images[0]
    seconds = [image.index_seconds for image in images]

    def step(state: SeriesState | None) -> SeriesState:
        for n, image in enumerate(images):
            started = time.perf_counter()
            state = next_state(state, image.ds, image.event, deps.rules)
            seconds[n] = image.index_seconds + time.perf_counter() - started
        if state is None:  # images is never empty; this satisfies the type checker
            raise ValueError("no image to apply")
        count = trees.count_instances(first.layout, first.event.study_uid, first.event.series_uid)
        state.summary["NumFiles"] = str(count)
        return state

    changed = await advance(deps.kv, series_key(first.event.site, first.event.series_uid), step)
    for value in seconds:
        metrics.CLASSIFY_SECONDS.observe(value)
    metrics.OBJECTS_INDEXED.labels("changed" if changed else "unchanged").inc(len(images))
    if changed is not None:
        state, revision = changed
        await asyncio.to_thread(write_summary, first.layout, first.event, state.summary, revision)
        await deps.bus.publish(series_updated(first.event, state.summary, revision))
        metrics.SERIES_UPDATED.inc()


def read_header(path: Path) -> Dataset:
    """The object's header, never its pixel data."""
    try:
        return read_dataset_header(path)
    except FileNotFoundError as err:
        raise BadInput("archive_file_missing", "the archived file is gone") from err
    except (InvalidDicomError, EOFError, ValueError, TypeError) as err:
        raise BadInput("not_dicom", f"archived file unreadable ({type(err).__name__})") from err


def index_instance(
    layout: Layout,
    event: InstanceStored,
    ds: Dataset,
    archive_file: Path,
    studies_linked: set[tuple[str, str]],
) -> None:
    """The links of one instance in ``raw/``, ``participants/`` and ``srs/``.

    ``studies_linked`` (site, study) skips the participant link already made for an earlier
    image: the same link for every image of a study, and a symlink call is not free.
    """
    trees.link_instance(layout, archive_file, event.study_uid, event.series_uid, event.sop_uid)
    patient_id = str(ds.get("PatientID", "") or "")
    if patient_id and (event.site, event.study_uid) not in studies_linked:
        studies_linked.add((event.site, event.study_uid))
        name = trees.study_link_name(ds.get("StudyDate"), ds.get("StudyTime"))
        trees.link_participant(layout, patient_id, name, event.study_uid)
    if event.modality == "SR":
        manufacturer = str(ds.get("Manufacturer", "") or "_")
        trees.link_structured_report(
            layout, manufacturer, event.study_uid, event.sop_uid, archive_file
        )


def next_state(
    state: SeriesState | None, ds: Dataset, event: InstanceStored, rules: RuleBook
) -> SeriesState:
    """The series state once this image is merged and classified (NumFiles: by the caller)."""
    previous = state or SeriesState()
    connection = {
        "AETitleCaller": event.calling_aet or "unknown",
        "AETitleCalled": event.called_aet or "unknown",
        "CallerIP": event.peer_address or "unknown",
    }
    summary = merge(previous.summary, ds, connection)
    result = classify_image(
        rules.current, ds, summary, summary.get("ClassifyType", []), previous.series_level_failed
    )
    summary["ClassifyType"] = list(result.types)
    return SeriesState(summary, sorted(result.series_level_failed))


def write_summary(
    layout: Layout, event: InstanceStored, summary: dict[str, Any], revision: int
) -> None:
    """``raw/<Study>/<Series>.json``, atomically, never replacing a newer revision."""
    folder = trees.series_dir(layout, event.study_uid, event.series_uid)
    path = summary_path(layout, event.study_uid, event.series_uid)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # replicas writing the same series take turns
        if _revision_of(path) >= revision:
            return
        data = dict(summary, FionaRevision=revision)
        write_atomic(path, json.dumps(data, sort_keys=True, indent=2).encode())
    finally:
        os.close(fd)


def summary_path(layout: Layout, study_uid: str, series_uid: str) -> Path:
    # Not with_suffix(): a UID's last component looks like a suffix to pathlib.
    return layout.raw_dir / study_uid / f"{series_uid}.json"


def _revision_of(path: Path) -> int:
    try:
        return int(json.loads(path.read_text()).get("FionaRevision", 0))
    except (FileNotFoundError, ValueError, AttributeError):
        return 0


def series_updated(event: InstanceStored, summary: dict[str, Any], revision: int) -> SeriesUpdated:
    return SeriesUpdated(
        site=event.site,
        study_uid=event.study_uid,
        series_uid=event.series_uid,
        revision=revision,
        num_files=int(summary.get("NumFiles", 0)),
        classify_types=list(summary.get("ClassifyType", [])),
        modality=str(summary.get("Modality", event.modality)),
        patient_hash=short_hash(str(summary.get("PatientID", ""))),
        summary=public_view(summary),
    )
