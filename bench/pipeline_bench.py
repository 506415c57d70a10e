#!/usr/bin/env python3
"""Pipeline throughput and latency of ``fiona up``: storescu -> FIONA -> Orthanc.

Two runs on the same corpus, each against a fresh ``python -m fiona_cli up`` (its own
nats-server, data directory and free ports):

1. **receiver-only baseline**: the corpus is sent (called AE ``FIONA``, nothing routed) and
   the time runs until every object's ``fiona.instance.stored`` event was seen (objects/s).
2. **whole pipeline**: a fresh Orthanc is the research PACS of project ``BENCH``; the corpus
   is sent to called AE ``BENCH`` and every study is followed through the pipeline by core
   NATS subscriptions: stored events, ``fiona.study.complete``, ``fiona.transfer.requested``,
   ``fiona.transfer.result`` (started / delivered / failed).

The corpus: one MR study of 5 series x 400 images (2,000 objects, 256x256 16-bit) and 50
small studies of 3 series x 4 images, sent together: one storescu for the big study and
``--senders`` lanes that each send their share of the small studies one storescu per study.

Goals (from the issue): end-to-end objects/s at least 0.5 x the receiver-only objects/s of
the same run; the big study delivered within the quiet period + 30 s of its last object.
Exit status 1 if a study was not delivered (or delivered more than once), Orthanc's
instance count differs from what was sent, or a run could not be measured.

    python bench/pipeline_bench.py                    # full corpus, quiet 5 s
    python bench/pipeline_bench.py --scale 0.1        # quick run
    python bench/pipeline_bench.py --json /tmp/pipeline.json --keep

See bench/README.md ("Pipeline benchmark").
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
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import receiver_bench as rb
from event_watch import EventWatcher
from pydicom import dcmwrite
from pydicom.uid import generate_uid

PROJECT = "BENCH"  # project name and the called AE title that routes to it
UNROUTED_AET = "FIONA"  # run 1: a called AE title without a routing rule
ORTHANC_AET = "ORTHANC"
E2E_RATIO_GOAL = 0.5
BIG_SLACK_S = 30.0  # big study delivered within quiet + 30 s of its last object
STALL_S = 180.0  # give up when no event arrived for this long
SUBJECTS = ("fiona.instance.stored.>", "fiona.study.>", "fiona.transfer.>")
STAGES = ("receive", "wait", "route", "queue", "export")


class BenchError(Exception):
    """A run could not be measured; the message says why."""


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Study:
    name: str  # "big" or "small-NNN"
    uid: str
    patient_id: str
    path: Path  # directory holding only this study's files
    files: int


def write_study(
    directory: Path, name: str, patient_id: str, series: int, images: int, size: int
) -> Study:
    """One MR study (explicit VR LE Part 10) with values the de-identification leak guard
    accepts: no patient-name or ID component shows up in retained text such as Manufacturer.
    """
    ds = rb.template_dataset()
    ds.Rows = ds.Columns = size
    ds.Manufacturer = "BenchCorp"
    ds.PatientName = "Roe^Richard"
    ds.ReferringPhysicianName = "Welby^Marcus"
    ds.PatientID = patient_id
    ds.AccessionNumber = f"X{patient_id[1:]}"
    ds.StudyInstanceUID = study_uid = generate_uid()
    ds.StudyID = "1"
    ds.FrameOfReferenceUID = generate_uid()
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    radius = np.hypot(x - size / 2, y - size / 2)
    pixels = (1500 + 1000 * np.sin(radius / 9.0) + 4 * x + 2 * y).astype(np.uint16)
    directory.mkdir(parents=True)
    index = 0
    for s in range(series):
        ds.SeriesInstanceUID = generate_uid()
        ds.SeriesNumber = s + 1
        for i in range(images):
            ds.InstanceNumber = i + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.ImagePositionPatient = ["0", "0", str(3 * i)]
            image = np.roll(pixels, index % size, axis=1) + np.uint16(index % 97)
            ds.PixelData = image.tobytes()
            dcmwrite(directory / f"s{s}i{i:04d}.dcm", ds, enforce_file_format=True)
            index += 1
    return Study(name, study_uid, patient_id, directory, series * images)


def build_corpus(root: Path, args: argparse.Namespace) -> tuple[Study, list[Study]]:
    started = time.monotonic()
    big_images = max(1, round(400 * args.scale))
    big = write_study(root / "big", "big", "P90000", 5, big_images, rb.IMAGE_SIZE)
    count = max(1, round(args.small_studies * args.scale)) if args.small_studies else 0
    small = [
        write_study(
            root / f"small-{n:03d}",
            f"small-{n:03d}",
            f"P{91000 + n}",
            args.small_series,
            args.small_images,
            rb.IMAGE_SIZE,
        )
        for n in range(count)
    ]
    files = big.files + sum(s.files for s in small)
    print(
        f"corpus: 1 study x {big.files} + {len(small)} studies x"
        f" {small[0].files if small else 0} = {files} files written"
        f" in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    return big, small


# --------------------------------------------------------------------------- events


@dataclass
class Track:
    """What the NATS subscriptions saw of one study (time.monotonic() at reception)."""

    stored: set[str] = field(default_factory=set)  # SOP instance UIDs
    stored_first: float | None = None
    stored_last: float | None = None
    complete: list[float] = field(default_factory=list)
    complete_events: list[dict[str, Any]] = field(default_factory=list)
    requested: list[float] = field(default_factory=list)
    requested_events: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    reopened: int = 0

    def outcome_times(self, outcome: str) -> list[float]:
        return [at for at, event in self.results if event.get("outcome") == outcome]


class Events(EventWatcher):
    """FIONA's events per study, timed on reception."""

    SUBJECTS = SUBJECTS

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.tracks: dict[str, Track] = {}
        self.last_event = time.monotonic()
        self.stored_total = 0

    def on_event(self, subject: str, event: dict[str, Any], at: float) -> None:
        self.last_event = at
        track = self.tracks.setdefault(str(event.get("study_uid", "")), Track())
        if subject.startswith("fiona.instance.stored"):
            sop = str(event.get("sop_uid"))
            if sop not in track.stored:
                track.stored.add(sop)
                self.stored_total += 1
                track.stored_first = track.stored_first or at
                track.stored_last = at
        elif subject == "fiona.study.complete":
            track.complete.append(at)
            track.complete_events.append(event)
        elif subject == "fiona.study.reopened":
            track.reopened += 1
        elif subject.startswith("fiona.transfer.requested"):
            track.requested.append(at)
            track.requested_events.append(event)
        elif subject == "fiona.transfer.result":
            track.results.append((at, event))

    def track(self, uid: str) -> Track:
        with self.lock:
            return self.tracks.setdefault(uid, Track())

    def stored(self) -> int:
        with self.lock:
            return self.stored_total

    def delivered(self, uids: list[str]) -> int:
        with self.lock:
            return sum(
                1
                for uid in uids
                if any(
                    e.get("outcome") in ("delivered", "failed")
                    for _, e in self.tracks.get(uid, Track()).results
                )
            )

    def quiet_for(self) -> float:
        with self.lock:
            return time.monotonic() - self.last_event


# --------------------------------------------------------------------------- processes


def distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = rb.free_port()
        if port not in ports:
            ports.append(port)
    return ports


def descendants(pid: int) -> set[int]:
    children, pending, found = rb._proc_children(), [pid], set()
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def start_time(pid: int) -> str | None:
    """The process' start time (field 22 of /proc/PID/stat): tells a reused pid apart."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return None


def http_ok(url: str) -> bool:
    return bool(rb.http_status(url) == 200)


SERVICES = ("receiver", "classifier", "arrival", "redcap_sync", "exporter")


class FionaUp(contextlib.AbstractContextManager["FionaUp"]):
    """``python -m fiona_cli up --data DIR`` on free ports; stopped with SIGINT on exit.

    The supervisor starts each service in its own process group, so on exit it gets SIGINT
    (it then stops its children, NATS last); whatever of its process tree is still alive
    after that is killed by pid.
    """

    def __init__(self, workdir: Path, log: Path, env: dict[str, str]) -> None:
        self.nats_port, self.dicom_port, *http = distinct_ports(2 + len(SERVICES))
        self.http_ports = dict(zip(SERVICES, http, strict=True))
        self.nats_url = f"nats://127.0.0.1:{self.nats_port}"
        self.datadir = workdir / "data"
        self.log = log
        base = {k: v for k, v in os.environ.items() if not k.startswith("FIONA_")}
        full_env = {
            **base,
            **rb.DCMTK_ENV,
            "FIONA_LOCAL_NATS_PORT": str(self.nats_port),
            "FIONA_DICOMPORT": str(self.dicom_port),
            "FIONA_DICOMAETITLE": "FIONA",
            "FIONA_HTTP_HOST": "127.0.0.1",
            **{f"FIONA_{n.upper()}__HTTP_PORT": str(p) for n, p in self.http_ports.items()},
            **env,
        }
        cmd = [sys.executable, "-m", "fiona_cli", "up", "--data", str(self.datadir)]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        self.tree: dict[int, str | None] = {}

    def __enter__(self) -> FionaUp:
        return self

    def remember_tree(self) -> None:
        for pid in descendants(self.proc.pid):
            self.tree.setdefault(pid, start_time(pid))

    def wait_ready(self) -> None:
        rb.wait_until(
            lambda: rb.tcp_open(self.nats_port), 60, "fiona up: nats", self.proc, self.log
        )
        for name, port in self.http_ports.items():
            url = f"http://127.0.0.1:{port}/readyz"
            rb.wait_until(
                functools.partial(http_ok, url),
                90,
                f"fiona up: {name}",
                self.proc,
                self.log,
            )
        rb.wait_until(
            lambda: rb.dicom_echo(self.dicom_port, "FIONA"),
            30,
            "fiona up: receiver dicom",
            self.proc,
            self.log,
        )
        self.remember_tree()

    def __exit__(self, *exc: object) -> None:
        self.remember_tree()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(45)  # children get 20 s, then NATS 10 s
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for pid, started in self.tree.items():
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    print(f"killed leftover fiona process {pid}", file=sys.stderr)

    def pids(self) -> dict[str, int]:
        """Service name -> pid of its process, from the command lines."""
        found: dict[str, int] = {}
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                words = [a.decode(errors="replace") for a in argv]
                if "run" in words and words.index("run") + 1 < len(words):
                    name = words[words.index("run") + 1].replace("-", "_")
                    found.setdefault(name, pid)
                elif words and words[0].endswith("nats-server"):
                    found["nats"] = pid
        return found


class Orthanc:
    """A fresh Orthanc (the research PACS), which lets FIONA verify with C-FIND."""

    def __init__(self, procs: rb.Processes, workdir: Path) -> None:
        self.http_port, self.dicom_port = distinct_ports(2)
        self.base = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "fiona-pipeline-bench",
            "StorageDirectory": str(workdir / "orthanc-storage"),
            "IndexDirectory": str(workdir / "orthanc-index"),
            "DicomAet": ORTHANC_AET,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowStore": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
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

    def statistics(self) -> dict[str, object]:
        return dict(rb.http_json(f"{self.base}/statistics"))


def projects_file(
    path: Path, orthanc_port: int, routed: bool, associations: int | None = None
) -> Path:
    destination: dict[str, Any] = {
        "kind": "dicom",
        "aet": ORTHANC_AET,
        "host": "127.0.0.1",
        "port": orthanc_port,
    }
    if associations is not None:
        destination["max_associations"] = associations
    project = {
        "name": PROJECT,
        "participant_pattern": "^.+$",
        "deidentification": {"profile": "recommended"},
        "destinations": [destination],
    }
    routing = [{"project": PROJECT, "called_aet": PROJECT}] if routed else []
    path.write_text(json.dumps({"projects": [project], "routing": routing}, indent=2))
    return path


# --------------------------------------------------------------------------- sending


@dataclass
class Sent:
    started: float = 0.0  # time.monotonic() when the first storescu was started
    study_start: dict[str, float] = field(default_factory=dict)  # study UID -> its storescu
    study_acked: dict[str, float] = field(default_factory=dict)  # ... start / exit
    errors: list[str] = field(default_factory=list)

    @property
    def finished(self) -> float:
        return max(self.study_acked.values())


def send_all(
    procs: rb.Processes,
    big: Study,
    small: list[Study],
    senders: int,
    aet: str,
    port: int,
    tag: str,
) -> Sent:
    """One storescu for the big study and `senders` lanes that each send their share of the
    small studies with one storescu per study, all lanes started together. A study's
    "acknowledged" moment is its storescu's exit (last object acknowledged, released)."""
    sent = Sent()
    lock = threading.Lock()
    lanes = [[big]] + [small[n::senders] for n in range(senders) if small[n::senders]]

    def run_lane(studies: list[Study]) -> None:
        for study in studies:
            name = f"{tag}-storescu-{study.name}"
            cmd = [rb.STORESCU, "+sd", "+r", "-to", "10", "-ta", "60", "-aec", aet]
            begun = time.monotonic()
            proc = procs.spawn(name, [*cmd, "127.0.0.1", str(port), str(study.path)], rb.DCMTK_ENV)
            code = proc.wait()
            ended = time.monotonic()
            with lock:
                sent.study_start[study.uid] = begun
                sent.study_acked[study.uid] = ended
                if code != 0:
                    sent.errors.append(
                        f"{name} exited with {code}{rb.log_tail(procs.log_of(name), 4)}"
                    )

    threads = [threading.Thread(target=run_lane, args=(lane,), daemon=True) for lane in lanes]
    sent.started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


def wait_progress(check: Any, events: Events, what: str, cap: float) -> None:
    """Poll `check()` every 50 ms until true; fail when no FIONA event came for STALL_S
    seconds or after `cap` seconds in all."""
    deadline = time.monotonic() + cap
    while not check():
        if events.quiet_for() > STALL_S:
            raise BenchError(f"{what}: no progress (no FIONA event) for {STALL_S:.0f} s")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not done after {cap:.0f} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- runs


@dataclass
class Baseline:
    objects: int
    send_s: float | None = None
    stored_s: float | None = None  # first send -> last stored event
    rate: float | None = None
    error: str | None = None


def run_baseline(
    args: argparse.Namespace, scratch: Path, procs: rb.Processes, big: Study, small: list[Study]
) -> Baseline:
    total = big.files + sum(s.files for s in small)
    result = Baseline(total)
    workdir = scratch / "run1"
    workdir.mkdir()
    env = {
        "FIONA_REDCAP_SYNC__PROJECTS_FILE": str(
            projects_file(workdir / "projects.json", rb.free_port(), routed=False)
        ),
        "FIONA_ARRIVAL__QUIET_SECONDS": f"{args.quiet:g}",
        "FIONA_ARRIVAL__GRACE_SECONDS": f"{args.grace:g}",
    }
    print("run 1 (receiver-only): starting fiona up", flush=True)
    try:
        with FionaUp(workdir, scratch / "logs" / "fiona-up-run1.log", env) as fiona:
            fiona.wait_ready()
            with Events(fiona.nats_url) as events:
                os.sync()
                sent = send_all(
                    procs, big, small, args.senders, UNROUTED_AET, fiona.dicom_port, "run1"
                )
                if sent.errors:
                    raise BenchError("; ".join(sent.errors))
                result.send_s = sent.finished - sent.started
                wait_progress(lambda: events.stored() >= total, events, "stored events", 600)
                with events.lock:
                    last = max(t.stored_last or 0.0 for t in events.tracks.values())
                result.stored_s = last - sent.started
                result.rate = total / result.stored_s
    except (BenchError, rb.BenchError) as err:
        result.error = str(err)
    print(
        f"run 1: {total} objects stored in {fmt(result.stored_s)} s"
        f" ({fmt(result.rate, digits=1)} objects/s)"
        + (f"; FAILED: {result.error}" if result.error else ""),
        flush=True,
    )
    return result


@dataclass
class StudyRow:
    name: str
    objects: int
    sent_at: float = 0.0  # relative to the first send
    receive_s: float | None = None  # its storescu: start -> exit
    wait_s: float | None = None  # last object acknowledged -> fiona.study.complete
    route_s: float | None = None  # complete -> fiona.transfer.requested
    queue_s: float | None = None  # requested -> transfer.result "started"
    export_s: float | None = None  # started -> "delivered"
    total_s: float | None = None  # its storescu start -> delivered
    last_to_delivered_s: float | None = None  # last object acknowledged -> delivered
    delivered_at: float | None = None  # relative to the first send
    export_started_at: float | None = None  # transfer.result "started", relative
    stored: int = 0
    completions: int = 0
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    exporter_seconds: float | None = None  # the delivered result's details.seconds
    reason: str | None = None  # arrival's completion reason
    arrival_internal_s: float | None = None  # completed_at - last_received_at
    errors: list[str] = field(default_factory=list)


def seconds_between(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def study_row(study: Study, sent: Sent, track: Track) -> StudyRow:
    row = StudyRow(study.name, study.files, stored=len(track.stored))
    start, acked = sent.study_start.get(study.uid), sent.study_acked.get(study.uid)
    row.completions, row.requests = len(track.complete), len(track.requested)
    row.outcomes = dict(Counter(str(e.get("outcome")) for _, e in track.results))
    if start is None or acked is None:
        row.errors.append("not sent")
        return row
    row.sent_at = start - sent.started
    row.receive_s = acked - start
    complete = track.complete[0] if track.complete else None
    requested = track.requested[0] if track.requested else None
    started = track.outcome_times("started")
    delivered = track.outcome_times("delivered")
    if complete is not None:
        row.wait_s = complete - acked
        event = track.complete_events[0]
        row.reason = str(event.get("reason"))
        with contextlib.suppress(KeyError, TypeError, ValueError):
            row.arrival_internal_s = seconds_between(
                event["last_received_at"], event["completed_at"]
            )
    if complete is not None and requested is not None:
        row.route_s = requested - complete
    if requested is not None and started:
        row.queue_s = started[0] - requested
    if started:
        row.export_started_at = started[0] - sent.started
    if started and delivered:
        row.export_s = delivered[0] - started[0]
    if delivered:
        row.total_s = delivered[0] - start
        row.last_to_delivered_s = delivered[0] - acked
        row.delivered_at = delivered[0] - sent.started
        for at, event in track.results:
            if at == delivered[0]:
                with contextlib.suppress(TypeError, ValueError):
                    row.exporter_seconds = float(event.get("details", {}).get("seconds"))
    # checks
    if row.stored != study.files:
        row.errors.append(f"{row.stored} of {study.files} objects stored")
    if not track.complete:
        row.errors.append("never completed")
    elif len({e.get("revision") for e in track.complete_events}) > 1:
        row.errors.append(f"completed {len(track.complete)} times (several revisions)")
    if track.reopened:
        row.errors.append(f"reopened {track.reopened} times")
    if complete is not None and not track.requested:
        row.errors.append("no transfer requested")
    if not delivered:
        failed = [e for _, e in track.results if e.get("outcome") == "failed"]
        detail = f": {failed[0].get('error')}" if failed else ""
        row.errors.append(f"not delivered{detail}")
    elif len(delivered) > 1:
        ids = {(e.get("transfer_id"), e.get("request_no")) for _, e in track.results}
        row.errors.append(f"delivered {len(delivered)} times ({len(ids)} transfer/request ids)")
    return row


@dataclass
class Pipeline:
    objects: int
    rows: list[StudyRow] = field(default_factory=list)
    send_s: float | None = None
    first_send_to_last_delivered_s: float | None = None
    last_sent_to_all_delivered_s: float | None = None
    rate: float | None = None
    orthanc_instances: int | None = None
    orthanc_studies: int | None = None
    pids: dict[str, int] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    # (seconds since the first send, Orthanc's CountInstances), sampled every 0.5 s
    orthanc_timeline: list[tuple[float, int]] = field(default_factory=list)
    # the big study's export, seen from Orthanc (only when no other export overlapped it):
    # seconds from its "started" to the first and to the last of its objects at Orthanc
    big_first_at_orthanc_s: float | None = None
    big_last_at_orthanc_s: float | None = None
    exporter_metrics: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_pipeline(
    args: argparse.Namespace, scratch: Path, procs: rb.Processes, big: Study, small: list[Study]
) -> Pipeline:
    studies = [big, *small]
    total = sum(s.files for s in studies)
    result = Pipeline(total)
    workdir = scratch / "run2"
    workdir.mkdir()
    print("run 2 (pipeline): starting Orthanc and fiona up", flush=True)
    try:
        orthanc = Orthanc(procs, workdir)
        env = {
            "FIONA_REDCAP_SYNC__PROJECTS_FILE": str(
                projects_file(
                    workdir / "projects.json", orthanc.dicom_port, True, args.associations
                )
            ),
            "FIONA_ARRIVAL__QUIET_SECONDS": f"{args.quiet:g}",
            "FIONA_ARRIVAL__GRACE_SECONDS": f"{args.grace:g}",
        }
        with FionaUp(workdir, scratch / "logs" / "fiona-up-run2.log", env) as fiona:
            fiona.wait_ready()
            result.pids = fiona.pids()
            with Events(fiona.nats_url) as events:
                os.sync()
                peak: dict[str, float] = {}
                counts: list[tuple[float, int]] = []
                stop_sampling = threading.Event()

                def sample() -> None:
                    while not stop_sampling.wait(0.5):
                        for name, pid in result.pids.items():
                            mb = rb.tree_rss_bytes(pid) / 2**20
                            peak[name] = max(peak.get(name, 0.0), mb)
                        with contextlib.suppress(OSError, ValueError, KeyError):
                            count = int(str(orthanc.statistics()["CountInstances"]))
                            counts.append((time.monotonic(), count))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                try:
                    sent = send_all(
                        procs, big, small, args.senders, PROJECT, fiona.dicom_port, "run2"
                    )
                    result.send_s = sent.finished - sent.started
                    print(
                        f"run 2: sent {total} objects in {result.send_s:.1f} s;"
                        " waiting for delivery",
                        flush=True,
                    )
                    result.errors.extend(sent.errors)
                    uids = [s.uid for s in studies]
                    try:
                        wait_progress(
                            lambda: events.delivered(uids) >= len(uids),
                            events,
                            "transfers",
                            args.timeout,
                        )
                    except BenchError as err:
                        result.errors.append(str(err))
                    time.sleep(args.grace + 1)  # a repeated delivery, if any, has time to show
                finally:
                    stop_sampling.set()
                    sampler.join()
                result.rss_mb = {k: round(v, 1) for k, v in sorted(peak.items())}
                result.orthanc_timeline = [(round(t - sent.started, 2), n) for t, n in counts]
                result.exporter_metrics = save_metrics(fiona, scratch / "logs")
                result.rows = [study_row(s, sent, events.track(s.uid)) for s in studies]
                stats = orthanc.statistics()
                result.orthanc_instances = int(str(stats["CountInstances"]))
                result.orthanc_studies = int(str(stats["CountStudies"]))
        big_export_seen_from_orthanc(result, big.files)
        delivered = [r.delivered_at for r in result.rows if r.delivered_at is not None]
        if delivered and len(delivered) == len(result.rows):
            last = max(delivered)
            result.first_send_to_last_delivered_s = last
            result.last_sent_to_all_delivered_s = last - (sent.finished - sent.started)
            result.rate = total / last
        if result.orthanc_instances != total:
            result.errors.append(f"Orthanc holds {result.orthanc_instances} of {total} instances")
        if result.orthanc_studies != len(studies):
            result.notes.append(f"Orthanc holds {result.orthanc_studies} studies")
        for row in result.rows:
            result.errors.extend(f"{row.name}: {e}" for e in row.errors)
            if row.completions > 1 and not any("completed" in e for e in row.errors):
                result.notes.append(
                    f"{row.name}: completion published {row.completions} times (same revision)"
                )
            if row.requests > 1:
                result.notes.append(f"{row.name}: transfer requested {row.requests} times")
    except (BenchError, rb.BenchError) as err:
        result.errors.append(str(err))
    return result


METRICS = {
    "store_seconds_sum": "fiona_exporter_store_seconds_sum",
    "store_seconds_count": "fiona_exporter_store_seconds_count",
    "transfer_seconds_sum": "fiona_exporter_transfer_seconds_sum",
}


def save_metrics(fiona: FionaUp, log_dir: Path) -> dict[str, float]:
    """Every service's /metrics into the log dir; the exporter's C-STORE and transfer sums."""
    found: dict[str, float] = {}
    for name, port in fiona.http_ports.items():
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode(errors="replace")
        except OSError:
            continue
        (log_dir / f"metrics-run2-{name}.txt").write_text(text)
        if name != "exporter":
            continue
        for line in text.splitlines():
            parts = line.split()
            for key, metric in METRICS.items():
                if len(parts) == 2 and parts[0] == metric:
                    with contextlib.suppress(ValueError):
                        found[key] = float(parts[1])
    return found


def big_export_seen_from_orthanc(result: Pipeline, objects: int) -> None:
    """When the big study was exported alone (every other study delivered before its export
    started), Orthanc's count rising shows when its C-STOREs began: the export de-identifies
    the whole study first, then sends."""
    if not result.rows or result.rows[0].export_started_at is None:
        return
    start = result.rows[0].export_started_at
    others = [r.delivered_at for r in result.rows[1:]]
    if any(at is None or at > start for at in others):
        return
    before = [n for t, n in result.orthanc_timeline if t <= start]
    base = before[-1] if before else 0
    rising = [t for t, n in result.orthanc_timeline if t > start and n > base]
    done = [t for t, n in result.orthanc_timeline if t > start and n >= base + objects]
    if rising:
        result.big_first_at_orthanc_s = rising[0] - start
    if done:
        result.big_last_at_orthanc_s = done[0] - start


# --------------------------------------------------------------------------- report


def fmt(value: float | None, width: int = 0, digits: int = 2) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def percent(share: float | None, width: int) -> str:
    return f"{share * 100:>{width - 1}.0f}%" if share is not None else f"{'-':>{width}}"


def stage_values(row: StudyRow) -> dict[str, float | None]:
    return {
        "receive": row.receive_s,
        "wait": row.wait_s,
        "route": row.route_s,
        "queue": row.queue_s,
        "export": row.export_s,
    }


def summarise(rows: list[StudyRow]) -> dict[str, dict[str, float | None]]:
    """Per stage: median, max, total and share of the summed stage times."""
    out: dict[str, dict[str, float | None]] = {}
    values: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for row in rows:
        for stage, value in stage_values(row).items():
            if value is not None:
                values[stage].append(value)
    grand = sum(sum(v) for v in values.values())
    for stage, vals in values.items():
        out[stage] = {
            "median_s": statistics.median(vals) if vals else None,
            "max_s": max(vals) if vals else None,
            "total_s": sum(vals) if vals else None,
            "share": sum(vals) / grand if vals and grand else None,
        }
    return out


def goals(args: argparse.Namespace, base: Baseline, pipe: Pipeline) -> dict[str, Any]:
    ratio = pipe.rate / base.rate if pipe.rate and base.rate else None
    big = pipe.rows[0] if pipe.rows else None
    big_s = big.last_to_delivered_s if big else None
    limit = args.quiet + BIG_SLACK_S
    return {
        "e2e_ratio": ratio,
        "e2e_ratio_goal": E2E_RATIO_GOAL,
        "e2e_ratio_met": ratio is not None and ratio >= E2E_RATIO_GOAL,
        "big_last_to_delivered_s": big_s,
        "big_goal_s": limit,
        "big_met": big_s is not None and big_s <= limit,
    }


def print_report(args: argparse.Namespace, base: Baseline, pipe: Pipeline) -> dict[str, Any]:
    met = goals(args, base, pipe)
    print()
    print(
        f"run 1 receiver-only: {base.objects} objects, send {fmt(base.send_s)} s,"
        f" all stored after {fmt(base.stored_s)} s: {fmt(base.rate, digits=1)} objects/s"
        + (f"  FAILED: {base.error}" if base.error else "")
    )
    print(
        f"run 2 pipeline:      {pipe.objects} objects, send {fmt(pipe.send_s)} s,"
        f" all delivered after {fmt(pipe.first_send_to_last_delivered_s)} s:"
        f" {fmt(pipe.rate, digits=1)} objects/s end to end"
    )
    print(
        f"last object sent -> all delivered: {fmt(pipe.last_sent_to_all_delivered_s)} s;"
        f" Orthanc instances {pipe.orthanc_instances} (sent {pipe.objects})"
    )
    header = (
        f"\n{'study':<18} {'objects':>7} {'receive_s':>9} {'wait_s':>7} {'route_s':>7}"
        f" {'queue_s':>7} {'export_s':>8} {'total_s':>8} {'last->deliv_s':>13}"
    )
    print(header)
    big = pipe.rows[:1]
    small = pipe.rows[1:]

    def line(label: str, objects: str, vals: dict[str, float | None], tot: Any, last: Any) -> None:
        cells = " ".join(fmt(vals[s], w) for s, w in zip(STAGES, (9, 7, 7, 7, 8), strict=True))
        print(f"{label:<18} {objects:>7} {cells} {fmt(tot, 8)} {fmt(last, 13)}")

    for row in big:
        line("big", str(row.objects), stage_values(row), row.total_s, row.last_to_delivered_s)
    summary_small = summarise(small) if small else {}
    if small:
        per = small[0].objects
        totals = [r.total_s for r in small if r.total_s is not None]
        lasts = [r.last_to_delivered_s for r in small if r.last_to_delivered_s is not None]
        for key, label, pick in (
            ("median_s", "small median", statistics.median),
            ("max_s", "small max", max),
        ):
            line(
                f"{label} ({len(small)})" if key == "median_s" else label,
                f"{per}",
                {s: summary_small[s][key] for s in STAGES},
                pick(totals) if totals else None,
                pick(lasts) if lasts else None,
            )
    summary_big = summarise(big)
    for label, summary in (("share big", summary_big), ("share small", summary_small)):
        if summary:
            cells = " ".join(
                percent(summary[s]["share"], w)
                for s, w in zip(STAGES, (9, 7, 7, 7, 8), strict=True)
            )
            print(f"{label:<18} {'':>7} {cells}")
    reasons = Counter(r.reason for r in pipe.rows)
    print(f"completion reasons: {dict(reasons)}")
    if big and big[0].exporter_seconds is not None:
        print(f"exporter's own seconds for the big study: {big[0].exporter_seconds:.2f}")
    if pipe.big_first_at_orthanc_s is not None:
        print(
            "big study export seen from Orthanc (0.5 s samples): first object"
            f" {pipe.big_first_at_orthanc_s:.1f} s after the export started, all"
            f" {fmt(pipe.big_last_at_orthanc_s, digits=1)} s after"
        )
    m = pipe.exporter_metrics
    if m.get("store_seconds_count"):
        print(
            f"exporter C-STOREs: {m['store_seconds_count']:.0f}, waiting for Orthanc's answers"
            f" {m['store_seconds_sum']:.1f} s in all"
            f" ({1000 * m['store_seconds_sum'] / m['store_seconds_count']:.0f} ms each) of"
            f" {m.get('transfer_seconds_sum', 0):.1f} s of transfers (summed; they overlap)"
        )
    if pipe.rss_mb:
        print("peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in pipe.rss_mb.items()))
    print()
    ratio = met["e2e_ratio"]
    print(
        f"goal: end-to-end/receiver-only throughput {fmt(ratio)} >= {E2E_RATIO_GOAL}:"
        f" {'met' if met['e2e_ratio_met'] else 'MISSED'}"
    )
    print(
        f"goal: big study delivered {fmt(met['big_last_to_delivered_s'])} s after its last"
        f" object <= quiet {args.quiet:g} + {BIG_SLACK_S:g} s:"
        f" {'met' if met['big_met'] else 'MISSED'}"
    )
    for note in pipe.notes:
        print(f"  note: {note}")
    for error in pipe.errors:
        print(f"  FAILED: {error}")
    return {
        **met,
        "stages_big": summary_big,
        "stages_small": summary_small,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quiet", type=float, default=5.0, help="FIONA_ARRIVAL__QUIET_SECONDS (default 5)"
    )
    parser.add_argument(
        "--grace", type=float, default=2.0, help="FIONA_ARRIVAL__GRACE_SECONDS (default 2)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="fraction of the corpus: images per big series (400) and number of small studies",
    )
    parser.add_argument("--small-studies", type=int, default=50, help="small studies (at scale 1)")
    parser.add_argument("--small-series", type=int, default=3, help="series per small study")
    parser.add_argument("--small-images", type=int, default=4, help="images per small series")
    parser.add_argument(
        "--senders", type=int, default=4, help="concurrent storescu lanes for the small studies"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="cap on waiting for delivery (s)"
    )
    parser.add_argument(
        "--associations",
        type=int,
        default=None,
        help="the Orthanc destination's max_associations (default: FIONA's default)",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="only run 2 (no ratio)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--workdir", type=Path, help="parent of the scratch dir (default: TMPDIR)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch dir (logs, data) after a good run"
    )
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    if args.senders < 1 or args.small_studies < 0 or args.small_series < 1:
        parser.error("--senders and --small-series must be positive, --small-studies >= 0")
    if args.small_images < 1 or args.quiet <= 0 or args.grace < 0:
        parser.error("--small-images and --quiet must be positive, --grace not negative")
    return args


def describe_environment(args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "storescu": rb.tool_version([rb.STORESCU, "--version"]),
        "orthanc": rb.tool_version([rb.ORTHANC, "--version"]),
        "nats_server": rb.tool_version([rb.NATS_SERVER, "--version"]),
        "quiet_s": args.quiet,
        "grace_s": args.grace,
        "scale": args.scale,
        "senders": f"1 (big study) + {args.senders} (small studies)",
        "orthanc_max_associations": args.associations or "FIONA's default (2)",
    }
    for key, value in info.items():
        print(f"{key}: {value}")
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, rb.raise_on_sigterm)
    info = describe_environment(args)
    scratch = Path(tempfile.mkdtemp(prefix="fiona-pipeline-bench-", dir=args.workdir))
    (scratch / "logs").mkdir()
    print(f"scratch dir: {scratch}", flush=True)
    report: dict[str, Any] = {"ok": False}
    try:
        big, small = build_corpus(scratch / "corpus", args)
        with rb.Processes(scratch / "logs") as procs:
            if args.skip_baseline:
                base = Baseline(big.files + sum(s.files for s in small), error="skipped")
            else:
                base = run_baseline(args, scratch, procs, big, small)
            pipe = run_pipeline(args, scratch, procs, big, small)
        checks = print_report(args, base, pipe)
        ok = not pipe.errors and (base.error is None or args.skip_baseline)
        report = {
            "ok": ok,
            "baseline": asdict(base),
            "pipeline": asdict(pipe),
            "checks": checks,
        }
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
