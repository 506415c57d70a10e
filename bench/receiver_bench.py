#!/usr/bin/env python3
"""C-STORE ingest benchmark: FIONA receiver vs DCMTK storescp vs Orthanc.

Generates a synthetic MR corpus with pydicom, sends it with DCMTK storescu over one and
over four concurrent associations, and reports objects/s, peak RSS and throughput ratios.
See bench/README.md for usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

try:
    import psutil  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # optional; /proc is read directly without it
    psutil = None

# Absolute paths on purpose: pynetdicom installs its own `storescu` earlier on PATH.
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = "/usr/sbin/Orthanc"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"

# Without TCP_NODELAY, DCMTK-based peers stall ~40 ms per object on loopback (Nagle).
DCMTK_ENV = {"TCP_NODELAY": "1"}

STREAM = "FIONA_INSTANCES"
SUBJECT = "fiona.instance.stored.>"
ALL_CASES = ("A1", "A4", "B1", "B4")
ALL_RECEIVERS = ("fiona", "storescp", "orthanc")
IMAGE_SIZE = 256
RATIO_PAIRS = (("fiona", "orthanc"), ("fiona", "storescp"), ("orthanc", "storescp"))


class BenchError(Exception):
    """A case could not be measured; the message says why."""


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Corpus:
    name: str
    root: Path
    quarters: tuple[Path, ...]
    count: int


@dataclass(frozen=True)
class ImageSlot:
    study: int
    series: int
    instance: int


def corpus_layout(name: str, scale: float) -> list[ImageSlot]:
    """A: one study, 5 series x 400 images; B: 200 studies x 10 images (both scaled)."""
    if name == "A":
        per_series = max(1, round(400 * scale))
        return [ImageSlot(0, s, i) for s in range(5) for i in range(per_series)]
    studies = max(1, round(200 * scale))
    return [ImageSlot(st, 0, i) for st in range(studies) for i in range(10)]


def base_pixels() -> np.ndarray:
    """A smooth 16-bit pattern with structure, so images are not constant or trivial."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
    r = np.hypot(x - IMAGE_SIZE / 2, y - IMAGE_SIZE / 2)
    pattern: np.ndarray = (1500 + 1000 * np.sin(r / 9.0) + 4 * x + 2 * y).astype(np.uint16)
    return pattern


def template_dataset() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.Manufacturer = "FIONA bench"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "NONE", "2D"
    ds.RepetitionTime, ds.EchoTime, ds.SliceThickness = "500", "15", "3"
    ds.StudyDate, ds.StudyTime = "20240101", "120000"
    ds.PixelSpacing = ["0.9", "0.9"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.Rows = ds.Columns = IMAGE_SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def write_corpus(corpus_dir: Path, name: str, scale: float) -> None:
    """Write corpus `name` as 4 quarter directories q0..q3 of consecutive images."""
    slots = corpus_layout(name, scale)
    ds, pixels = template_dataset(), base_pixels()
    study_uids: dict[int, str] = {}
    series_uids: dict[tuple[int, int], str] = {}
    for index, slot in enumerate(slots):
        if slot.study not in study_uids:
            study_uids[slot.study] = generate_uid()
            ds.FrameOfReferenceUID = generate_uid()
        series_key = (slot.study, slot.series)
        series_uids.setdefault(series_key, generate_uid())
        ds.PatientName = f"BENCH^{name}{slot.study:03d}"
        ds.PatientID = ds.AccessionNumber = f"{name}{slot.study:05d}"
        ds.StudyInstanceUID = study_uids[slot.study]
        ds.StudyID = str(slot.study + 1)
        ds.SeriesInstanceUID = series_uids[series_key]
        ds.SeriesNumber, ds.InstanceNumber = slot.series + 1, slot.instance + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = ["0", "0", str(3 * slot.instance)]
        image = np.roll(pixels, index % IMAGE_SIZE, axis=1) + np.uint16(index % 97)
        ds.PixelData = image.tobytes()
        quarter = corpus_dir / f"q{index * 4 // len(slots)}"
        quarter.mkdir(parents=True, exist_ok=True)
        dcmwrite(quarter / f"img{index:05d}.dcm", ds, enforce_file_format=True)


def prepare_corpus(root: Path, name: str, scale: float) -> Corpus:
    """Generate corpus `name` under `root`, or reuse a complete earlier one.

    Layout: <root>/<name>-scale<scale>/files/q0..q3 (only DICOM files below files/, which
    storescu scans recursively) and a `complete` marker holding the file count.
    """
    corpus_dir = root / f"{name}-scale{scale:g}"
    files, marker = corpus_dir / "files", corpus_dir / "complete"
    count = len(corpus_layout(name, scale))
    if not (marker.exists() and marker.read_text() == str(count)):
        shutil.rmtree(corpus_dir, ignore_errors=True)
        started = time.monotonic()
        write_corpus(files, name, scale)
        marker.write_text(str(count))
        print(f"corpus {name}: wrote {count} files in {time.monotonic() - started:.1f} s")
    quarters = tuple(sorted(p for p in files.iterdir() if p.is_dir()))
    return Corpus(name, files, quarters, count)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").strip().splitlines()
        return "\n    ".join(["", *text[-lines:]]) if text else ""
    return ""


class Processes(contextlib.AbstractContextManager["Processes"]):
    """Starts processes in their own session and ends every one of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    def log_of(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.started):
            stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group we started (pgid == our child's pid), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            if sig == signal.SIGTERM:  # leader gone; sweep forked children still in the group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            return


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise BenchError(
                f"{what}: process exited with {proc.returncode}" + (log_tail(log) if log else "")
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"{what}: not ready after {timeout:.0f} s" + (log_tail(log) if log else "")
            )
        time.sleep(0.1)


def tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def http_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.load(response))


def dicom_echo(port: int, aet: str) -> bool:
    cmd = [ECHOSCU, "-to", "2", "-ta", "2", "-aec", aet, "127.0.0.1", str(port)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=10, env={**os.environ, **DCMTK_ENV})
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


# --------------------------------------------------------------------------- memory


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _proc_rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Summed RSS of `pid` and all its descendants (shared pages count once per process)."""
    if psutil is not None:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            total = 0
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            return total
        return 0
    children, pending, total = _proc_children(), [pid], 0
    while pending:
        current = pending.pop()
        total += _proc_rss_kb(current) * 1024
        pending.extend(children.get(current, []))
    return total


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (its own threads; 0 once it is gone)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used so far by `pid` and its live descendants."""
    children, pending, total = _proc_children(), [pid], 0.0
    while pending:
        current = pending.pop()
        total += _proc_cpu_seconds(current)
        pending.extend(children.get(current, []))
    return total


class RssSampler(contextlib.AbstractContextManager["RssSampler"]):
    """Samples the process tree's RSS every 100 ms in a background thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, tree_rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, tree_rss_bytes(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss_bytes(self.pid))


# --------------------------------------------------------------------------- receivers


class Receiver:
    """One receiver under test; `start` brings up a fresh instance storing into `workdir`."""

    name = ""
    aet = ""
    port = 0
    pid = 0

    def start(self, procs: Processes, workdir: Path) -> None:
        raise NotImplementedError

    def wait_settled(self, expected: int, deadline: float) -> None:
        """Block until the receiver's work for `expected` objects is complete."""

    def stored_count(self) -> int:
        raise NotImplementedError


class StorescpReceiver(Receiver):
    name, aet = "storescp", "STORESCP"

    def start(self, procs: Processes, workdir: Path) -> None:
        self.store = workdir / "store"
        self.store.mkdir()
        self.port = free_port()
        cmd = [STORESCP, "--fork", "-od", str(self.store), str(self.port)]
        proc = procs.spawn("storescp", cmd, DCMTK_ENV)
        self.pid = proc.pid
        wait_until(
            lambda: dicom_echo(self.port, self.aet), 30, "storescp", proc, procs.log_of("storescp")
        )

    def stored_count(self) -> int:
        return sum(1 for p in self.store.iterdir() if p.is_file())


class OrthancReceiver(Receiver):
    name, aet = "orthanc", "ORTHANC"

    def start(self, procs: Processes, workdir: Path) -> None:
        self.store, self.http_port, self.port = workdir / "storage", free_port(), free_port()
        config = {
            "Name": "fiona-bench",
            "StorageDirectory": str(self.store),
            "IndexDirectory": str(workdir / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
        }
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        proc = procs.spawn("orthanc", [ORTHANC, str(config_path)], DCMTK_ENV)
        self.pid, log = proc.pid, procs.log_of("orthanc")
        system_url = f"http://127.0.0.1:{self.http_port}/system"
        wait_until(lambda: http_status(system_url) == 200, 60, "orthanc http", proc, log)
        wait_until(lambda: dicom_echo(self.port, self.aet), 30, "orthanc dicom", proc, log)

    def stored_count(self) -> int:
        """Objects both in the storage area (files) and in Orthanc's index."""
        files = sum(1 for p in self.store.rglob("*") if p.is_file())
        stats = http_json(f"http://127.0.0.1:{self.http_port}/statistics")
        return min(files, int(str(stats["CountInstances"])))


def orthanc_sync_default() -> str:
    """SyncStorageArea as Orthanc's own default configuration (`--config=` dump) sets it."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "default.json"
        subprocess.run([ORTHANC, f"--config={dump}"], capture_output=True, timeout=30)
        text = dump.read_text() if dump.exists() else ""
    match = re.search(r'"SyncStorageArea"\s*:\s*(\w+)', text)
    return match.group(1) if match else "unknown"


def fiona_cli_runnable() -> bool:
    try:
        return importlib.util.find_spec("fiona_cli.__main__") is not None
    except ImportError:
        return False


class FionaReceiver(Receiver):
    name, aet = "fiona", "FIONA"

    def __init__(self, workers: int | None) -> None:
        self.workers = workers

    def start(self, procs: Processes, workdir: Path) -> None:
        if not fiona_cli_runnable():
            raise BenchError(
                "fiona_cli is not runnable (`python -m fiona_cli` needs fiona_cli/__main__.py):"
                " install the repo with pip install -e /work/main"
            )
        self.nats_url, self.nats_pid = start_nats(procs, workdir)
        http_port, self.port = free_port(), free_port()
        self.datadir = workdir / "data"
        env = {
            **DCMTK_ENV,
            "FIONA_DATADIR": str(self.datadir),
            "FIONA_DICOMPORT": str(self.port),
            "FIONA_DICOMAETITLE": self.aet,
            "FIONA_NATS_URL": self.nats_url,
            "FIONA_RECEIVER__HTTP_PORT": str(http_port),
        }
        if self.workers is not None:
            env["FIONA_RECEIVER__WORKERS"] = str(self.workers)
        cmd = [sys.executable, "-m", "fiona_cli", "run", "receiver"]
        proc = procs.spawn("fiona", cmd, env)
        self.pid = proc.pid
        ready_url = f"http://127.0.0.1:{http_port}/readyz"
        wait_until(
            lambda: http_status(ready_url) == 200, 60, "fiona receiver", proc, procs.log_of("fiona")
        )

    def wait_settled(self, expected: int, deadline: float) -> None:
        """The whole path: every stored object's event is in JetStream."""
        events = asyncio.run(wait_stream(self.nats_url, expected, deadline))
        if events != expected:
            raise BenchError(f"JetStream holds {events} events for {expected} objects")

    def stored_count(self) -> int:
        archive = self.datadir / "site" / "archive"
        return sum(1 for p in archive.glob("scp_*/MR.*") if p.is_file())


def start_nats(procs: Processes, workdir: Path) -> tuple[str, int]:
    """A private JetStream-enabled nats-server; returns its URL and pid."""
    port = free_port()
    cmd = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port)]
    proc = procs.spawn("nats-server", [*cmd, "-sd", str(workdir / "nats")])
    log = procs.log_of("nats-server")
    wait_until(lambda: tcp_open(port), 30, "nats-server", proc, log)
    return f"nats://127.0.0.1:{port}", proc.pid


async def wait_stream(url: str, expected: int, deadline: float) -> int:
    """Poll the stream every 50 ms until it holds `expected` stored-events; return the count."""
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        jetstream, count = client.jetstream(), 0
        while True:
            with contextlib.suppress(NotFoundError):
                info = await jetstream.stream_info(STREAM, subjects_filter=SUBJECT)
                count = sum((info.state.subjects or {}).values())
            if count >= expected:
                return count
            if time.monotonic() > deadline:
                raise BenchError(f"JetStream: {count}/{expected} events before timeout")
            await asyncio.sleep(0.05)
    finally:
        await client.close()


# --------------------------------------------------------------------------- cases


@dataclass
class Result:
    case: str
    receiver: str
    objects: int
    seconds: float | None = None
    rate: float | None = None
    peak_rss_mb: float | None = None
    error: str | None = None
    runs: list[float] = field(default_factory=list)  # seconds of each repetition


@dataclass(frozen=True)
class Case:
    name: str
    corpus: Corpus
    associations: int

    @property
    def sources(self) -> list[Path]:
        return list(self.corpus.quarters) if self.associations == 4 else [self.corpus.root]

    @property
    def timeout(self) -> float:
        """Generous bound: 60 s plus 0.1 s per object (i.e. fails below ~8 objects/s)."""
        return 60 + 0.1 * self.corpus.count


def send_corpus(procs: Processes, case: Case, receiver: Receiver, deadline: float) -> None:
    """Run one storescu per source directory, all started together; wait for all."""
    senders = []
    for index, source in enumerate(case.sources):
        cmd = [STORESCU, "+sd", "+r", "-to", "10", "-ta", "10", "-aec", receiver.aet]
        cmd += ["127.0.0.1", str(receiver.port), str(source)]
        senders.append((f"storescu{index}", procs.spawn(f"storescu{index}", cmd, DCMTK_ENV)))
    for name, proc in senders:
        try:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as err:
            raise BenchError(f"{name} still running at the case timeout") from err
        if code != 0:
            raise BenchError(f"{name} exited with {code}{log_tail(procs.log_of(name))}")


def run_case(case: Case, receiver: Receiver, scratch: Path) -> Result:
    """Measure one case against a fresh receiver instance with fresh storage."""
    result = Result(case.name, receiver.name, case.corpus.count)
    workdir = Path(tempfile.mkdtemp(prefix=f"{case.name}-{receiver.name}-", dir=scratch))
    try:
        with Processes(workdir) as procs:
            receiver.start(procs, workdir)
            os.sync()  # no writeback of earlier cases' files (or their deletion) in this one
            with RssSampler(receiver.pid) as rss:
                started = time.monotonic()
                deadline = started + case.timeout
                send_corpus(procs, case, receiver, deadline)
                receiver.wait_settled(case.corpus.count, deadline)
                result.seconds = time.monotonic() - started
            result.peak_rss_mb = rss.peak / 2**20
            stored = receiver.stored_count()
            if stored != case.corpus.count:
                raise BenchError(f"stored {stored} of {case.corpus.count} objects")
            result.rate = case.corpus.count / result.seconds
    except BenchError as err:
        result.error = str(err)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def combine(runs: list[Result]) -> Result:
    """Median time and highest RSS over repetitions of one case; one failed run fails it."""
    first = runs[0]
    peaks = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    combined = Result(
        first.case, first.receiver, first.objects, peak_rss_mb=max(peaks, default=None)
    )
    failed = [r.error for r in runs if r.error is not None]
    if failed:
        combined.error = failed[0]
        return combined
    combined.runs = [r.seconds for r in runs if r.seconds is not None]
    combined.seconds = statistics.median(combined.runs)
    combined.rate = first.objects / combined.seconds
    return combined


# --------------------------------------------------------------------------- report


def format_result(result: Result, brief: bool = False) -> str:
    """One table row; `brief` keeps only the first line of an error (progress output)."""
    rss = f"{result.peak_rss_mb:8.1f}" if result.peak_rss_mb is not None else f"{'-':>8}"
    if result.error is not None:
        error = result.error.splitlines()[0] if brief else result.error
        return f"  {result.receiver:<9} {result.objects:>7}  FAILED: {error}"
    spread = (
        f"   runs {min(result.runs):.2f}-{max(result.runs):.2f} s" if len(result.runs) > 1 else ""
    )
    return (
        f"  {result.receiver:<9} {result.objects:>7} {result.seconds:>9.2f} "
        f"{result.rate:>10.1f} {rss}{spread}"
    )


def ratios(results: list[Result]) -> dict[str, dict[str, float | None]]:
    """Throughput ratios per case, e.g. {"A1": {"fiona/orthanc": 0.8, ...}}."""
    table: dict[str, dict[str, float | None]] = {}
    for case in dict.fromkeys(r.case for r in results):
        rates = {r.receiver: r.rate for r in results if r.case == case}
        table[case] = {}
        for num, den in RATIO_PAIRS:
            if num in rates and den in rates:
                a, b = rates[num], rates[den]
                table[case][f"{num}/{den}"] = a / b if a and b else None
    return table


def print_report(results: list[Result]) -> None:
    header = f"  {'receiver':<9} {'objects':>7} {'seconds':>9} {'objects/s':>10} {'RSS MB':>8}"
    for case in dict.fromkeys(r.case for r in results):
        print(f"\ncase {case}\n{header}")
        for result in (r for r in results if r.case == case):
            print(format_result(result))
    table = ratios(results)
    if any(table.values()):
        print("\nthroughput ratios")
        for case, pairs in table.items():
            cells = [f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in pairs.items()]
            print(f"  {case}: " + "   ".join(cells))


# --------------------------------------------------------------------------- main


def parse_list(value: str, allowed: tuple[str, ...]) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}; got {value!r}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", default=",".join(ALL_CASES), type=lambda v: parse_list(v, ALL_CASES)
    )
    parser.add_argument(
        "--receivers", default=",".join(ALL_RECEIVERS), type=lambda v: parse_list(v, ALL_RECEIVERS)
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="fraction of the full corpus size (A=2000, B=200x10 images)",
    )
    parser.add_argument(
        "--fiona-workers",
        type=int,
        default=None,
        help="FIONA_RECEIVER__WORKERS for the fiona receiver (default: unset)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case and receiver; reports the median"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--corpus-dir",
        type=Path,
        help="keep the generated corpus here and reuse it (default: temporary)",
    )
    parser.add_argument("--workdir", type=Path, help="parent of the scratch dir (default: TMPDIR)")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def tool_version(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def describe_environment(args: argparse.Namespace) -> dict[str, object]:
    info: dict[str, object] = {
        "scale": args.scale,
        "cpus": os.cpu_count(),
        "storescu": tool_version([STORESCU, "--version"]),
    }
    if "orthanc" in args.receivers:
        info["orthanc"] = tool_version([ORTHANC, "--version"])
        sync = orthanc_sync_default()
        info["orthanc_SyncStorageArea"] = f"{sync} (Orthanc's default, left unset)"
    if "fiona" in args.receivers:
        info["nats_server"] = tool_version([NATS_SERVER, "--version"])
        info["fiona_workers"] = args.fiona_workers if args.fiona_workers is not None else "unset"
    for key, value in info.items():
        print(f"{key}: {value}")
    return info


def build_receivers(args: argparse.Namespace) -> list[Receiver]:
    factories: dict[str, Callable[[], Receiver]] = {
        "fiona": lambda: FionaReceiver(args.fiona_workers),
        "storescp": StorescpReceiver,
        "orthanc": OrthancReceiver,
    }
    return [factories[name]() for name in args.receivers]


def run_all(args: argparse.Namespace, scratch: Path) -> list[Result]:
    corpus_root = args.corpus_dir or scratch / "corpus"
    corpora = {
        name: prepare_corpus(corpus_root, name, args.scale)
        for name in dict.fromkeys(case[0] for case in args.cases)
    }
    results: list[Result] = []
    for case_name in args.cases:
        case = Case(case_name, corpora[case_name[0]], int(case_name[1]))
        runs: dict[str, list[Result]] = {}
        for _ in range(args.repeat):  # receivers interleaved, so drift hits all alike
            for receiver in build_receivers(args):
                result = run_case(case, receiver, scratch)
                print(f"{case.name}{format_result(result, brief=True)}", flush=True)
                runs.setdefault(receiver.name, []).append(result)
        results.extend(combine(r) for r in runs.values())
    return results


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def scratch_dir(parent: Path | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fiona-bench-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    info = describe_environment(args)
    try:
        with scratch_dir(args.workdir) as scratch:
            results = run_all(args, scratch)
    except KeyboardInterrupt:
        print("interrupted; all benchmark processes stopped", file=sys.stderr)
        return 130
    print_report(results)
    if args.json:
        report = {
            "environment": info,
            "results": [asdict(r) for r in results],
            "ratios": ratios(results),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
