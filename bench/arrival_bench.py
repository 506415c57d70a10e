#!/usr/bin/env python3
"""Arrival latency: last object acknowledged -> "study complete", FIONA vs Orthanc.

For each case, small MR studies are sent with DCMTK storescu (one process per study, all
started together) and the time is taken from the moment a study's storescu exited (its last
object acknowledged) to the moment FIONA's arrival service published ``fiona.study.complete``
for it, as seen by a core NATS subscription. Cases:

- ``known-1``, ``known-20``: every image carries ``ImagesInAcquisition`` (the series' image
  count), so each series completes after the grace (reason ``expected-count``);
- ``timer-1``, ``timer-20``: no ``ImagesInAcquisition``; only the quiet period decides
  (reason ``quiet``);
- ``-1`` / ``-20``: one study, or twenty studies in flight at once.

The same studies then go to Orthanc with ``StableAge`` = FIONA's quiet period, timed the same way
up to its ``StableStudy`` change (``GET /changes`` polled every 50 ms). Finally 200 small
studies (1 series x 2 images, known counts) are sent in batches and the arrival process' RSS
is printed after 20, 100 and 200 of them completed. Each run starts its own nats-server,
FIONA receiver, classifier and arrival, and Orthanc, with fresh data directories.

Goals (from the issue): expected-count completion within 3 s of the last object; timer
completion within the quiet period + 1 s; no memory growth with the number of completed studies.
A case fails (exit status 1) if a study did not complete, completed more than once or for the
wrong reason, or Orthanc never reported it stable.

    python bench/arrival_bench.py                       # all cases, quiet 5 s (~1.5 min)
    python bench/arrival_bench.py --quiet 15 --json /tmp/arrival.json
    python bench/arrival_bench.py --cases known-20 --memory-studies 0 --no-orthanc

See bench/README.md ("Arrival benchmark") for the caveats.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import receiver_bench as rb
from event_watch import EventWatcher
from pydicom import dcmwrite
from pydicom.uid import generate_uid

CASES = ("known-1", "timer-1", "known-20", "timer-20")
KNOWN_GOAL_S = 3.0  # expected-count completion within 3 s of the last object
TIMER_SLACK_S = 1.0  # timer completion within the quiet period + 1 s
IMAGE_SIZE = 64
FIONA_AET, ORTHANC_AET = "FIONA", "ORTHANC"
STUDY_COMPLETE = "fiona.study.complete"
SUBJECTS = ("fiona.study.>", "fiona.series.>")  # completions, reopens, classifier summaries
CHANGES_POLL_S = 0.05
MEMORY_GROWTH_LIMIT_MB = 4.0  # "flat": less than this from the first to the last sample


class BenchError(Exception):
    """A phase could not be measured; the message says why."""


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Study:
    uid: str
    patient_id: str
    path: Path  # directory holding only this study's files
    files: int


def write_study(directory: Path, patient_id: str, series: int, images: int, known: bool) -> Study:
    """One MR study of `series` x `images` 64x64 16-bit images (explicit VR LE, Part 10).

    `known`: every image says how many images its series has (ImagesInAcquisition).
    """
    ds = rb.template_dataset()
    ds.Rows = ds.Columns = IMAGE_SIZE
    ds.PatientName = f"BENCH^{patient_id}"
    ds.PatientID = ds.AccessionNumber = patient_id
    ds.StudyInstanceUID = study_uid = generate_uid()
    ds.StudyID = "1"
    ds.FrameOfReferenceUID = generate_uid()
    pixels = np.arange(IMAGE_SIZE * IMAGE_SIZE, dtype=np.uint16).reshape(IMAGE_SIZE, IMAGE_SIZE)
    directory.mkdir(parents=True)
    for s in range(series):
        ds.SeriesInstanceUID = generate_uid()
        ds.SeriesNumber = s + 1
        if known:
            ds.ImagesInAcquisition = images
        for i in range(images):
            ds.InstanceNumber = i + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.ImagePositionPatient = ["0", "0", str(3 * i)]
            ds.PixelData = (pixels + np.uint16(100 * s + i)).tobytes()
            dcmwrite(directory / f"s{s}i{i:03d}.dcm", ds, enforce_file_format=True)
    return Study(study_uid, patient_id, directory, series * images)


def case_studies(case: str) -> tuple[bool, int]:
    """(known counts?, studies in flight) of a case name such as "timer-20"."""
    variant, count = case.split("-")
    return variant == "known", int(count)


def build_corpus(
    root: Path, cases: list[str], series: int, images: int, memory_studies: int
) -> tuple[dict[str, list[Study]], list[Study]]:
    started = time.monotonic()
    by_case: dict[str, list[Study]] = {}
    for case in cases:
        known, count = case_studies(case)
        prefix = f"{case[0].upper()}{count}"
        by_case[case] = [
            write_study(root / case / f"{n:03d}", f"{prefix}-{n:03d}", series, images, known)
            for n in range(count)
        ]
    memory = [
        write_study(root / "memory" / f"{n:03d}", f"M-{n:03d}", 1, 2, True)
        for n in range(memory_studies)
    ]
    files = sum(s.files for studies in [*by_case.values(), memory] for s in studies)
    print(f"corpus: {files} files written in {time.monotonic() - started:.1f} s")
    return by_case, memory


# --------------------------------------------------------------------------- sending


def distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = rb.free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass(frozen=True)
class Sent:
    started: float  # time.monotonic() before the first storescu was started
    all_started: float  # after the last one was started
    exits: list[float]  # each job's exit moment, in job order

    @property
    def seconds(self) -> float:
        return max(self.exits) - self.started

    @property
    def all_in_flight(self) -> bool:
        """No storescu exited before the last one was started."""
        return min(self.exits) > self.all_started


def send(
    procs: rb.Processes, jobs: dict[str, list[Path]], aet: str, port: int, timeout: float
) -> Sent:
    """Start one storescu per job, all at once, and wait for them all; time each one's exit.

    A storescu exits once its last object is acknowledged and the association released.
    """
    exits: dict[str, float] = {}
    lock = threading.Lock()

    def wait(name: str, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
            with lock:
                exits[name] = time.monotonic()

    waiters = []
    started = time.monotonic()
    for name, paths in jobs.items():
        cmd = [rb.STORESCU, "+sd", "+r", "-to", "10", "-ta", "30", "-aec", aet]
        proc = procs.spawn(name, [*cmd, "127.0.0.1", str(port), *map(str, paths)], rb.DCMTK_ENV)
        waiter = threading.Thread(target=wait, args=(name, proc), daemon=True)
        waiter.start()
        waiters.append((name, proc, waiter))
    all_started = time.monotonic()
    for name, proc, waiter in waiters:
        waiter.join()
        if name not in exits:
            raise BenchError(f"{name} still running after {timeout:.0f} s")
        if proc.returncode != 0:
            raise BenchError(
                f"{name} exited with {proc.returncode}{rb.log_tail(procs.log_of(name))}"
            )
    return Sent(started, all_started, [exits[name] for name in jobs])


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    """Poll `check()` every 20 ms until true or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return bool(check())
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------- FIONA


def http_ok(url: str) -> bool:
    return rb.http_status(url) == 200


@dataclass(frozen=True)
class Fiona:
    nats_url: str
    dicom_port: int
    pids: dict[str, int]


def start_fiona(procs: rb.Processes, workdir: Path, quiet: float, grace: float) -> Fiona:
    """A private nats-server, then receiver, classifier and arrival, waited for until ready."""
    nats_port, dicom_port, *http_ports = distinct_ports(5)
    cmd = [rb.NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(nats_port)]
    proc = procs.spawn("nats-server", [*cmd, "-sd", str(workdir / "nats")])
    rb.wait_until(
        lambda: rb.tcp_open(nats_port), 30, "nats-server", proc, procs.log_of("nats-server")
    )
    url = f"nats://127.0.0.1:{nats_port}"
    common = {"FIONA_DATADIR": str(workdir / "data"), "FIONA_NATS_URL": url}
    own_env = {
        "receiver": {
            **rb.DCMTK_ENV,
            "FIONA_DICOMPORT": str(dicom_port),
            "FIONA_DICOMAETITLE": FIONA_AET,
        },
        "classifier": {},
        "arrival": {
            "FIONA_ARRIVAL__QUIET_SECONDS": f"{quiet:g}",
            "FIONA_ARRIVAL__GRACE_SECONDS": f"{grace:g}",
        },
    }
    started = {}
    for (name, env), http_port in zip(own_env.items(), http_ports, strict=True):
        env = {**common, **env, f"FIONA_{name.upper()}__HTTP_PORT": str(http_port)}
        cmd = [sys.executable, "-m", "fiona_cli", "run", name]
        started[name] = (procs.spawn(name, cmd, env), http_port)
    for name, (proc, http_port) in started.items():
        ready = functools.partial(http_ok, f"http://127.0.0.1:{http_port}/readyz")
        rb.wait_until(ready, 60, f"fiona {name}", proc, procs.log_of(name))
    return Fiona(url, dicom_port, {name: proc.pid for name, (proc, _) in started.items()})


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() at reception
    event: dict[str, Any]


class FionaEvents(EventWatcher):
    """FIONA's study and series events, timed on reception."""

    SUBJECTS = SUBJECTS

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._seen: dict[tuple[str, str], list[Seen]] = {}  # (subject, study UID)

    def on_event(self, subject: str, event: dict[str, Any], at: float) -> None:
        key = (subject, str(event.get("study_uid", "")))
        self._seen.setdefault(key, []).append(Seen(at, event))

    def of(self, subject: str, study_uid: str) -> list[Seen]:
        with self.lock:
            return list(self._seen.get((subject, study_uid), []))

    def completed(self, study_uids: list[str]) -> int:
        return sum(1 for uid in study_uids if self.of(STUDY_COMPLETE, uid))

    def all_completed(self, study_uids: list[str]) -> bool:
        return self.completed(study_uids) == len(study_uids)

    def stored(self, stream: str, subject: str) -> int:
        """How many messages on `subject` JetStream stored (after its deduplication)."""

        async def query() -> int:
            info = await self._nc.jetstream().stream_info(stream, subjects_filter=subject)
            return sum((info.state.subjects or {}).values())

        return int(self._call(query()))


# --------------------------------------------------------------------------- Orthanc


class Orthanc(contextlib.AbstractContextManager["Orthanc"]):
    """A fresh Orthanc whose `StableStudy` changes a thread notes, timed on reception."""

    def __init__(self, procs: rb.Processes, workdir: Path, stable_age: int) -> None:
        self.http_port, self.dicom_port = distinct_ports(2)
        self.base = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "fiona-arrival-bench",
            "StorageDirectory": str(workdir / "orthanc-storage"),
            "IndexDirectory": str(workdir / "orthanc-index"),
            "DicomAet": ORTHANC_AET,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "StableAge": stable_age,
        }
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        proc = procs.spawn("orthanc", [rb.ORTHANC, str(config_path)], rb.DCMTK_ENV)
        log = procs.log_of("orthanc")
        rb.wait_until(
            lambda: rb.http_status(f"{self.base}/system") == 200, 60, "orthanc", proc, log
        )
        rb.wait_until(
            lambda: rb.dicom_echo(self.dicom_port, ORTHANC_AET), 30, "orthanc dicom", proc, log
        )
        self._lock = threading.Lock()
        self._stable: dict[str, list[float]] = {}  # Orthanc study ID -> moments seen
        self._uids: dict[str, str] = {}  # Orthanc study ID -> StudyInstanceUID
        self.poll_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Orthanc:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        since = 0
        while not self._stop.is_set():
            try:
                page = rb.http_json(f"{self.base}/changes?since={since}&limit=1000")
            except (OSError, ValueError):
                self.poll_errors += 1
                self._stop.wait(CHANGES_POLL_S)
                continue
            at = time.monotonic()
            changes = page.get("Changes", [])
            assert isinstance(changes, list)
            with self.lock:
                for change in changes:
                    if change["ChangeType"] == "StableStudy":
                        self._stable.setdefault(change["ID"], []).append(at)
            since = int(str(page["Last"]))
            if page.get("Done", True):
                self._stop.wait(CHANGES_POLL_S)

    def stable(self) -> dict[str, list[float]]:
        """StudyInstanceUID -> moments its StableStudy changes were seen."""
        with self.lock:
            stable = dict(self._stable)
        for orthanc_id in stable.keys() - self._uids.keys():
            tags = rb.http_json(f"{self.base}/studies/{orthanc_id}")["MainDicomTags"]
            assert isinstance(tags, dict)
            self._uids[orthanc_id] = str(tags["StudyInstanceUID"])
        return {self._uids[k]: v for k, v in stable.items()}


# --------------------------------------------------------------------------- cases


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


@dataclass
class StudyTiming:
    study_uid: str
    fiona_latency_s: float | None = None  # storescu exit -> fiona.study.complete received
    fiona_reason: str | None = None
    fiona_internal_s: float | None = None  # the event's completed_at - last_received_at
    classifier_last_s: float | None = None  # storescu exit -> last fiona.series.updated
    orthanc_latency_s: float | None = None  # storescu exit -> StableStudy seen in /changes


@dataclass
class CaseResult:
    case: str
    studies: int
    files_per_study: int
    expected_reason: str
    goal_s: float
    timings: list[StudyTiming] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    send_s: dict[str, float] = field(default_factory=dict)  # first start -> last exit, by peer

    def latencies(self, peer: str) -> list[float]:
        values = (getattr(t, f"{peer}_latency_s") for t in self.timings)
        return [v for v in values if v is not None]

    def summary(self) -> dict[str, Any]:
        fiona, orthanc = self.latencies("fiona"), self.latencies("orthanc")
        fiona_median, orthanc_median = median(fiona), median(orthanc)
        return {
            "fiona_median_s": fiona_median,
            "fiona_max_s": max(fiona, default=None),
            "goal_met": len(fiona) == self.studies and max(fiona) <= self.goal_s,
            "reasons": dict(Counter(t.fiona_reason for t in self.timings if t.fiona_reason)),
            "orthanc_median_s": orthanc_median,
            "orthanc_max_s": max(orthanc, default=None),
            "fiona/orthanc": (
                fiona_median / orthanc_median if fiona_median and orthanc_median else None
            ),
        }


def send_studies(
    procs: rb.Processes, result: CaseResult, studies: list[Study], peer: str, aet: str, port: int
) -> list[float]:
    """One storescu per study, all at once (so each study's last acknowledgement is timed);
    returns their exit moments in study order."""
    jobs = {f"{result.case}-{peer}-{n:03d}": [s.path] for n, s in enumerate(studies)}
    sent = send(procs, jobs, aet, port, 120)
    result.send_s[peer] = sent.seconds
    if len(studies) > 1 and not sent.all_in_flight:
        result.errors.append(f"{peer}: a storescu exited before the last one was started")
    return sent.exits


def run_fiona(
    procs: rb.Processes,
    fiona: Fiona,
    events: FionaEvents,
    result: CaseResult,
    studies: list[Study],
) -> None:
    exits = send_studies(procs, result, studies, "fiona", FIONA_AET, fiona.dicom_port)
    uids = [s.uid for s in studies]
    timeout = result.goal_s + 60 + len(studies)
    if not wait_for(functools.partial(events.all_completed, uids), timeout):
        missing = len(uids) - events.completed(uids)
        result.errors.append(
            f"fiona: {missing} of {len(uids)} studies not complete {timeout:.0f} s after sending"
        )
    for n, (timing, exited) in enumerate(zip(result.timings, exits, strict=True)):
        updates = events.of("fiona.series.updated", timing.study_uid)
        if updates:
            timing.classifier_last_s = updates[-1].at - exited
        seen = events.of(STUDY_COMPLETE, timing.study_uid)
        if not seen:
            continue
        first = seen[0]
        timing.fiona_latency_s = first.at - exited
        timing.fiona_reason = str(first.event.get("reason"))
        with contextlib.suppress(KeyError, TypeError, ValueError):
            timing.fiona_internal_s = seconds_between(
                first.event["last_received_at"], first.event["completed_at"]
            )
        if timing.fiona_reason != result.expected_reason:
            result.errors.append(
                f"fiona: study {n} completed as {timing.fiona_reason!r},"
                f" not {result.expected_reason!r}"
            )


def run_orthanc(
    procs: rb.Processes, orthanc: Orthanc, result: CaseResult, studies: list[Study]
) -> None:
    exits = send_studies(procs, result, studies, "orthanc", ORTHANC_AET, orthanc.dicom_port)
    uids = {s.uid for s in studies}
    timeout = result.goal_s + 60
    if not wait_for(lambda: uids <= orthanc.stable().keys(), timeout):
        missing = len(uids - orthanc.stable().keys())
        result.errors.append(
            f"orthanc: {missing} of {len(uids)} studies not stable {timeout:.0f} s after sending"
        )
    stable = orthanc.stable()
    for timing, exited in zip(result.timings, exits, strict=True):
        if timing.study_uid in stable:
            timing.orthanc_latency_s = stable[timing.study_uid][0] - exited


def run_case(
    case: str,
    studies: list[Study],
    procs: rb.Processes,
    fiona: Fiona,
    events: FionaEvents,
    orthanc: Orthanc | None,
    quiet: float,
) -> CaseResult:
    known, _ = case_studies(case)
    result = CaseResult(
        case,
        len(studies),
        studies[0].files,
        "expected-count" if known else "quiet",
        KNOWN_GOAL_S if known else quiet + TIMER_SLACK_S,
        [StudyTiming(s.uid) for s in studies],
    )
    try:
        run_fiona(procs, fiona, events, result, studies)
    except BenchError as err:
        result.errors.append(f"fiona: {err}")
    if orthanc is not None:
        try:
            run_orthanc(procs, orthanc, result, studies)
        except BenchError as err:
            result.errors.append(f"orthanc: {err}")
    summary = result.summary()
    print(
        f"{case}: fiona median {fmt(summary['fiona_median_s'])} s"
        f" max {fmt(summary['fiona_max_s'])} s {summary['reasons']};"
        f" orthanc median {fmt(summary['orthanc_median_s'])} s"
        + (f"; {len(result.errors)} error(s)" if result.errors else ""),
        flush=True,
    )
    return result


# --------------------------------------------------------------------------- memory


@dataclass
class MemorySample:
    label: str
    completed: int  # studies completed in the whole run so far
    rss_mb: float


def rss_mb(pid: int) -> float:
    return rb.tree_rss_bytes(pid) / 2**20


def memory_checkpoints(total: int) -> list[int]:
    """After how many memory-phase studies RSS is sampled: 20, 100, 200 for 200."""
    return sorted({n for n in (total // 10, total // 2, total) if n > 0})


def run_memory(
    procs: rb.Processes,
    fiona: Fiona,
    events: FionaEvents,
    studies: list[Study],
    completed_before: int,
    grace: float,
) -> tuple[list[MemorySample], list[str]]:
    """Send the studies in batches (4 storescu each); sample the arrival RSS after each."""
    samples: list[MemorySample] = []
    errors: list[str] = []
    done = 0
    for checkpoint in memory_checkpoints(len(studies)):
        batch = studies[done:checkpoint]
        senders = min(4, len(batch))
        jobs = {
            f"memory-{checkpoint}-{n}": [s.path for s in batch[n::senders]] for n in range(senders)
        }
        try:
            send(procs, jobs, FIONA_AET, fiona.dicom_port, 300)
        except BenchError as err:
            errors.append(f"memory: {err}")
            break
        uids = [s.uid for s in batch]
        if not wait_for(functools.partial(events.all_completed, uids), grace + 120):
            errors.append(f"memory: {len(uids) - events.completed(uids)} studies not complete")
            break
        time.sleep(1.0)  # let the arrival tidy up (outbox, markers) before sampling
        done = checkpoint
        label = f"after {checkpoint:>3} memory studies"
        samples.append(MemorySample(label, completed_before + done, rss_mb(fiona.pids["arrival"])))
        print(f"memory: {checkpoint} studies completed", flush=True)
    return samples, errors


# --------------------------------------------------------------------------- checks


def check_once(
    results: list[CaseResult],
    memory: list[Study],
    events: FionaEvents,
    orthanc: Orthanc | None,
    series_per_study: int,
) -> list[str]:
    """Every study completed exactly once: adds to the cases' errors and notes; returns the
    memory phase's errors."""
    stable = orthanc.stable() if orthanc is not None else {}
    for result in results:
        for n, timing in enumerate(result.timings):
            uid = timing.study_uid
            errors, notes = once_problems(events, uid, series_per_study)
            result.errors.extend(f"fiona: study {n} {e}" for e in errors)
            result.notes.extend(f"fiona: study {n} {e}" for e in notes)
            if len(stable.get(uid, [])) > 1:
                result.notes.append(f"orthanc: study {n} reported stable {len(stable[uid])} times")
    memory_errors: list[str] = []
    for n, study in enumerate(memory):
        errors, _ = once_problems(events, study.uid, 1)
        memory_errors.extend(f"memory: study {n} {e}" for e in errors)
    return memory_errors


def once_problems(events: FionaEvents, uid: str, series: int) -> tuple[list[str], list[str]]:
    """(errors, notes) about one study's events: completed more than once, reopened...

    The same completion published twice (same revision) is only a note: JetStream stores it
    once (message id), but a core NATS subscriber sees both.
    """
    errors: list[str] = []
    notes: list[str] = []
    seen = events.of(STUDY_COMPLETE, uid)
    revisions = sorted({str(s.event.get("revision")) for s in seen})
    if len(revisions) > 1:
        errors.append(f"completed {len(revisions)} times (revisions {', '.join(revisions)})")
    elif len(seen) > 1:
        notes.append(f"completion published {len(seen)} times (same revision)")
    reopened = events.of("fiona.study.reopened", uid)
    if reopened:
        errors.append(f"reopened {len(reopened)} times")
    series_done = events.of("fiona.series.complete", uid)
    distinct = {(s.event.get("series_uid"), s.event.get("revision")) for s in series_done}
    if seen and len(distinct) != series:
        notes.append(f"{len(distinct)} series completions for {series} series")
    return errors, notes


# --------------------------------------------------------------------------- report


def fmt(value: float | None, width: int = 0, digits: int = 2) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def print_report(
    results: list[CaseResult], samples: list[MemorySample], checks: dict[str, Any]
) -> None:
    print(
        f"\n{'case':<9} {'studies':>7} {'fiona_median_s':>14} {'fiona_max_s':>11} {'goal_s':>6}"
        f" {'goal':<6} {'orthanc_median_s':>16} {'orthanc_max_s':>13} {'fiona/orthanc':>13}"
        "  reasons"
    )
    for result in results:
        s = result.summary()
        goal = "met" if s["goal_met"] else "MISSED"
        reasons = " ".join(f"{k}:{v}" for k, v in s["reasons"].items()) or "-"
        print(
            f"{result.case:<9} {result.studies:>7} {fmt(s['fiona_median_s'], 14)}"
            f" {fmt(s['fiona_max_s'], 11)} {result.goal_s:>6.2f} {goal:<6}"
            f" {fmt(s['orthanc_median_s'], 16)} {fmt(s['orthanc_max_s'], 13)}"
            f" {fmt(s['fiona/orthanc'], 13)}  {reasons}"
        )
    for result in results:
        for line in result.errors:
            print(f"  {result.case} FAILED: {line}")
        for line in result.notes:
            print(f"  {result.case} note: {line}")
    print()
    for sample in samples:
        print(
            f"arrival RSS {sample.label:<28} ({sample.completed:>3} completed in all):"
            f" {sample.rss_mb:6.1f} MB"
        )
    if "memory_growth_mb" in checks:
        print(
            f"arrival RSS growth over the memory phase: {checks['memory_growth_mb']:+.1f} MB"
            f" ({checks['memory_growth_kb_per_study']:+.2f} kB per study): {checks['memory']}"
        )
    for line in checks.get("memory_errors", []):
        print(f"  FAILED: {line}")
    print(
        f"fiona.study.complete: {checks['completions_seen']} received,"
        f" {checks['completions_distinct']} distinct, {checks['completions_stored']} stored"
        " in FIONA_STUDIES"
    )


# --------------------------------------------------------------------------- main


def parse_cases(value: str) -> list[str]:
    cases = [v.strip() for v in value.split(",") if v.strip()]
    if not cases or any(c not in CASES for c in cases):
        raise argparse.ArgumentTypeError(f"choose from {','.join(CASES)}; got {value!r}")
    return cases


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", type=parse_cases, default=list(CASES), help=",".join(CASES))
    parser.add_argument(
        "--quiet", type=float, default=5.0, help="FIONA's quiet period and Orthanc's StableAge"
    )
    parser.add_argument("--grace", type=float, default=2.0, help="FIONA's grace (expected count)")
    parser.add_argument("--series", type=int, default=3, help="series per study")
    parser.add_argument("--images", type=int, default=10, help="images per series")
    parser.add_argument(
        "--memory-studies",
        type=int,
        default=200,
        help="studies (1 series x 2 images) for the memory check; 0 skips it",
    )
    parser.add_argument("--no-orthanc", action="store_true", help="skip the Orthanc comparison")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--workdir", type=Path, help="parent of the scratch dir (default: TMPDIR)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch dir (logs, data) after a good run"
    )
    args = parser.parse_args(argv)
    if args.quiet < 1:
        parser.error("--quiet must be at least 1 (Orthanc's StableAge is whole seconds)")
    if args.series < 1 or args.images < 1 or args.memory_studies < 0:
        parser.error("--series and --images must be positive, --memory-studies not negative")
    return args


def describe_environment(args: argparse.Namespace, stable_age: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "storescu": rb.tool_version([rb.STORESCU, "--version"]),
        "nats_server": rb.tool_version([rb.NATS_SERVER, "--version"]),
        "quiet_s": args.quiet,
        "grace_s": args.grace,
        "study": f"{args.series} series x {args.images} images of {IMAGE_SIZE}x{IMAGE_SIZE}",
    }
    if not args.no_orthanc:
        info["orthanc"] = rb.tool_version([rb.ORTHANC, "--version"])
        info["orthanc_StableAge_s"] = stable_age
    for key, value in info.items():
        print(f"{key}: {value}")
    return info


def run(args: argparse.Namespace, scratch: Path, stable_age: int) -> dict[str, Any]:
    by_case, memory = build_corpus(
        scratch / "corpus", args.cases, args.series, args.images, args.memory_studies
    )
    logs = scratch / "logs"
    logs.mkdir()
    print(f"logs: {logs}")
    with rb.Processes(logs) as procs, contextlib.ExitStack() as stack:
        fiona = start_fiona(procs, scratch, args.quiet, args.grace)
        events = stack.enter_context(FionaEvents(fiona.nats_url))
        orthanc = None
        if not args.no_orthanc:
            orthanc = stack.enter_context(Orthanc(procs, scratch, stable_age))
        arrival = fiona.pids["arrival"]
        samples = [MemorySample("at start", 0, rss_mb(arrival))]
        results = [
            run_case(case, by_case[case], procs, fiona, events, orthanc, args.quiet)
            for case in args.cases
        ]
        completed = sum(r.studies for r in results)
        samples.append(MemorySample("after the cases", completed, rss_mb(arrival)))
        memory_samples, memory_errors = run_memory(
            procs, fiona, events, memory, completed, args.grace
        )
        samples += memory_samples
        time.sleep(args.grace + 1)  # a second completion, if any, has time to show
        memory_errors += check_once(results, memory, events, orthanc, args.series)
        uids = [t.study_uid for r in results for t in r.timings] + [s.uid for s in memory]
        seen = [s for uid in uids for s in events.of(STUDY_COMPLETE, uid)]
        checks: dict[str, Any] = {
            "completions_seen": len(seen),
            "completions_distinct": len(
                {(s.event.get("study_uid"), s.event.get("revision")) for s in seen}
            ),
            "completions_stored": events.stored("FIONA_STUDIES", STUDY_COMPLETE),
            "memory_errors": memory_errors,
        }
    if len(memory_samples) >= 2:
        growth = memory_samples[-1].rss_mb - memory_samples[0].rss_mb
        studies = memory_checkpoints(len(memory))
        checks["memory_growth_mb"] = growth
        checks["memory_growth_kb_per_study"] = growth * 1024 / (studies[-1] - studies[0])
        checks["memory"] = "flat" if growth < MEMORY_GROWTH_LIMIT_MB else "GROWS"
    print_report(results, samples, checks)
    return {
        "cases": [{**asdict(r), **r.summary()} for r in results],
        "memory": [asdict(s) for s in samples],
        "checks": checks,
        "ok": not memory_errors and not any(r.errors for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, rb.raise_on_sigterm)
    stable_age = max(1, round(args.quiet))
    info = describe_environment(args, stable_age)
    scratch = Path(tempfile.mkdtemp(prefix="fiona-arrival-bench-", dir=args.workdir))
    report: dict[str, Any] = {"ok": False}
    try:
        report = run(args, scratch, stable_age)
    except (BenchError, rb.BenchError) as err:
        print(f"FAILED: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; all benchmark processes stopped", file=sys.stderr)
        return 130
    finally:
        if report["ok"] and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"scratch dir (logs, data) kept: {scratch}")
    if args.json:
        args.json.write_text(json.dumps({"environment": info, **report}, indent=2) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
