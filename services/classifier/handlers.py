"""``fiona.instance.stored`` -> trees, series summary, classification, ``fiona.series.updated``."""

import asyncio
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js.kv import KeyValue
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from fiona_common.bus import Bus
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


async def on_instances_stored(
    events: list[InstanceStored], deps: ClassifierDeps
) -> list[BadInput | None]:
    """Index and classify a batch; one summary update and one event per series touched.

    Returns, per event, None or why it was refused (the bus terminates those).
    """
    outcomes: list[BadInput | None] = [None] * len(events)
    for indexes in _by_series(events).values():
        # Header reads and links overlap on worker threads (file I/O releases the GIL).
        prepared = await asyncio.gather(
            *(asyncio.to_thread(prepare, events[i], deps.layouts) for i in indexes),
            return_exceptions=True,
        )
        images = []
        for i, result in zip(indexes, prepared, strict=True):
            if isinstance(result, BadInput):
                outcomes[i] = result
                metrics.OBJECTS_INDEXED.labels("refused").inc()
            elif isinstance(result, BaseException):
                raise result  # not the event's fault: the whole batch is retried
            else:
                images.append(result)
        if images:
            await update_series(images, deps)
    return outcomes


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


def prepare(event: InstanceStored, layouts: dict[str, Layout]) -> Image:
    """Read the header and create the instance's links (on a worker thread)."""
    started = time.perf_counter()
    layout = layouts.get(event.site)
    if layout is None:
        raise BadInput("unknown_site", f"no data directory is configured for site {event.site}")
    archive_file = layout.resolve(event.archive_path)
    ds = read_header(archive_file)
    index_instance(layout, event, ds, archive_file)
    metrics.CLASSIFY_SECONDS.observe(time.perf_counter() - started)
    return Image(event, layout, ds)


async def update_series(images: list[Image], deps: ClassifierDeps) -> None:
    """Fold the images into the series state; write and announce it if it changed."""
    first = images[0]

    def step(state: SeriesState | None) -> SeriesState:
        for image in images:
            state = next_state(state, image.ds, image.event, deps.rules)
        if state is None:  # images is never empty; this satisfies the type checker
            raise ValueError("no image to apply")
        count = trees.count_instances(first.layout, first.event.study_uid, first.event.series_uid)
        state.summary["NumFiles"] = str(count)
        return state

    changed = await advance(deps.kv, series_key(first.event.site, first.event.series_uid), step)
    metrics.OBJECTS_INDEXED.labels("changed" if changed else "unchanged").inc(len(images))
    if changed is not None:
        state, revision = changed
        await asyncio.to_thread(write_summary, first.layout, first.event, state.summary, revision)
        await deps.bus.publish(series_updated(first.event, state.summary, revision))
        metrics.SERIES_UPDATED.inc()


def read_header(path: Path) -> Dataset:
    """The object's header, never its pixel data."""
    try:
        return dcmread(path, stop_before_pixels=True)
    except FileNotFoundError as err:
        raise BadInput("archive_file_missing", "the archived file is gone") from err
    except (InvalidDicomError, EOFError, ValueError, TypeError) as err:
        raise BadInput("not_dicom", f"archived file unreadable ({type(err).__name__})") from err


def index_instance(layout: Layout, event: InstanceStored, ds: Dataset, archive_file: Path) -> None:
    """The links of one instance in ``raw/``, ``participants/`` and ``srs/``."""
    trees.link_instance(layout, archive_file, event.study_uid, event.series_uid, event.sop_uid)
    patient_id = str(ds.get("PatientID", "") or "")
    if patient_id:
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
