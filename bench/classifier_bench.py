"""Classifier throughput against the receiver's, in one run, per core.

Measures, on the receiver benchmark's corpus A (2,000 MR images in 5 series):

- ``floor_dcmread``: a plain ``pydicom.dcmread(stop_before_pixels=True)`` of every file, in
  this process: what reading the headers alone costs;
- ``receiver``: the FIONA receiver (``fiona run receiver``) taking the corpus from DCMTK
  ``storescu`` until every "instance stored" event is in JetStream;
- ``classifier_1p`` / ``classifier_2p``: the classifier service with one and with two
  processes, from publishing the receiver's "instance stored" events until the durable
  consumers have acknowledged all of them.

Every service run gets a fresh nats-server and data directory. For each it prints objects/s
(wall clock), CPU milliseconds per object of the service's own processes (nats-server
apart, in its own column) and objects per CPU-second ("per core"). The goal of issue 3 is the
classifier's objects per CPU-second at least 2x the receiver's.

    python bench/classifier_bench.py [--rules classifyRules.json] [--scale 0.5]
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import receiver_bench as rb
from pydicom import dcmread

from fiona_common.bus import connect
from fiona_common.layout import Layout
from fiona_common.messages import InstanceStored, StoredVia
from services.receiver.archive import read_identity
from services.receiver.ingest import Origin, stored_event

ORIGIN = Origin(
    calling_aet="BENCH", called_aet="FIONA", peer_address="127.0.0.1", via=StoredVia.DICOM
)


def corpus_files(corpus: rb.Corpus) -> list[Path]:
    return sorted(p for q in corpus.quarters for p in q.iterdir() if p.is_file())


def archive(files: list[Path], layout: Layout) -> list[InstanceStored]:
    """Hard-link the corpus into the archive as the receiver would, with its events."""
    layout.ensure()
    events, now = [], datetime.now(UTC)
    for path in files:
        identity = read_identity(path)
        target = layout.archive_file(identity.study_uid, identity.sop_uid, identity.file_prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
        events.append(
            stored_event(
                identity, "default", layout.relative(target), target.stat().st_size, ORIGIN, now
            )
        )
    return events


async def publish(url: str, events: list[InstanceStored]) -> None:
    bus = await connect(url, "bench")
    await bus.ensure_streams()
    for start in range(0, len(events), 256):
        assert all(await bus.publish_many(list(events[start : start + 256])))
    await bus.close()


async def backlog(url: str) -> int:
    nc = await nats.connect(url)
    try:
        consumers = await nc.jetstream().consumers_info("FIONA_INSTANCES")
    finally:
        await nc.close()
    partitions = [c for c in consumers if c.name.startswith("classifier-p")]
    if len(partitions) < InstanceStored.partitions:
        return -1  # not all created yet
    return sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in partitions)


@dataclass
class Run:
    """One measured run: wall time and CPU seconds of the service's processes."""

    name: str
    objects: int
    seconds: float
    cpu_seconds: float
    nats_cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.objects / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.objects / self.cpu_seconds

    def row(self) -> str:
        nats_ms = (
            f"{self.nats_cpu_seconds / self.objects * 1e3:>13.2f}"
            if self.nats_cpu_seconds is not None
            else f"{'-':>13}"
        )
        return (
            f"{self.name:<16}{self.rate:>10.1f}{self.cpu_seconds / self.objects * 1e3:>12.2f}"
            f"{self.per_cpu_second:>12.1f}{nats_ms}"
        )


def floor_run(files: list[Path]) -> Run:
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:
        dcmread(path, stop_before_pixels=True)
    return Run(
        "floor_dcmread", len(files), time.perf_counter() - started, time.process_time() - cpu
    )


def receiver_run(corpus: rb.Corpus, associations: int, scratch: Path) -> Run:
    """The FIONA receiver taking the corpus from storescu, as in bench/receiver_bench.py."""
    workdir = Path(tempfile.mkdtemp(prefix="receiver-", dir=scratch))
    case = rb.Case(f"A{associations}", corpus, associations)
    receiver = rb.FionaReceiver(workers=None)
    with rb.Processes(workdir) as procs:
        receiver.start(procs, workdir)
        nats_pid = receiver.nats_pid
        os.sync()
        started = time.perf_counter()
        cpu, nats_cpu = rb.tree_cpu_seconds(receiver.pid), rb.tree_cpu_seconds(nats_pid)
        deadline = time.monotonic() + case.timeout
        rb.send_corpus(procs, case, receiver, deadline)
        receiver.wait_settled(corpus.count, deadline)
        seconds = time.perf_counter() - started
        cpu = rb.tree_cpu_seconds(receiver.pid) - cpu
        nats_cpu = rb.tree_cpu_seconds(nats_pid) - nats_cpu
        if receiver.stored_count() != corpus.count:
            raise rb.BenchError(f"receiver stored {receiver.stored_count()} of {corpus.count}")
    return Run(f"receiver_A{associations}", corpus.count, seconds, cpu, nats_cpu)


def classifier_run(files: list[Path], processes: int, rules: Path | None, scratch: Path) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix=f"classifier{processes}-", dir=scratch))
    with rb.Processes(workdir) as procs:
        url, nats_pid = rb.start_nats(procs, workdir)
        events = archive(files, Layout(workdir / "data"))
        env = {"FIONA_DATADIR": str(workdir / "data"), "FIONA_NATS_URL": url}
        if rules:
            env["FIONA_CLASSIFIER__RULES_FILE"] = str(rules)
        pids = []
        for n in range(processes):
            http = rb.free_port()
            proc = procs.spawn(
                f"classifier{n}",
                [sys.executable, "-m", "fiona_cli", "run", "classifier"],
                {**env, "FIONA_CLASSIFIER__HTTP_PORT": str(http)},
            )
            pids.append(proc.pid)
            rb.wait_until(
                lambda h=http: rb.http_status(f"http://127.0.0.1:{h}/readyz") == 200,
                60,
                f"classifier {n}",
            )
        os.sync()
        started = time.perf_counter()
        cpu = sum(rb.tree_cpu_seconds(pid) for pid in pids)
        nats_cpu = rb.tree_cpu_seconds(nats_pid)
        asyncio.run(publish(url, events))
        rb.wait_until(lambda: asyncio.run(backlog(url)) == 0, 600, "classifier backlog")
        seconds = time.perf_counter() - started
        cpu = sum(rb.tree_cpu_seconds(pid) for pid in pids) - cpu
        nats_cpu = rb.tree_cpu_seconds(nats_pid) - nats_cpu
    return Run(f"classifier_{processes}p", len(files), seconds, cpu, nats_cpu)


def report(runs: dict[str, Run]) -> None:
    header = f"{'what':<16}{'objects/s':>10}{'CPU ms/obj':>12}{'obj/CPU-s':>12}{'NATS ms/obj':>13}"
    print(header)
    for run in runs.values():
        print(run.row())
    receiver, floor = runs["receiver_A1"], runs["floor_dcmread"]
    print("\nratios (the goal: classifier_1p per core >= 2.00 x receiver)")
    for name in ("classifier_1p", "classifier_2p"):
        run = runs[name]
        print(
            f"  {name}: per core {run.per_cpu_second / receiver.per_cpu_second:.2f} x receiver,"
            f" wall {run.rate / receiver.rate:.2f} x receiver,"
            f" per core {run.per_cpu_second / floor.per_cpu_second:.2f} x floor"
        )


def median_run(runs: list[Run]) -> Run:
    """Median wall time and median CPU of repeated runs (each median on its own)."""
    return Run(
        runs[0].name,
        runs[0].objects,
        statistics.median(r.seconds for r in runs),
        statistics.median(r.cpu_seconds for r in runs),
        (
            statistics.median(r.nats_cpu_seconds for r in runs if r.nats_cpu_seconds is not None)
            if runs[0].nats_cpu_seconds is not None
            else None
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, help="a classifyRules.json (default: FIONA's)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    parser.add_argument("--corpus-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    measured: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="fiona-cbench-") as tmp:
        scratch = Path(tmp)
        corpus = rb.prepare_corpus(args.corpus_dir or scratch, "A", args.scale)
        files = corpus_files(corpus)
        for _ in range(args.repeat):  # interleaved, so a slower spell of the VM hits all alike
            runs = [floor_run(files), receiver_run(corpus, 1, scratch)]
            runs += [classifier_run(files, n, args.rules, scratch) for n in (1, 2)]
            for run in runs:
                print(run.row(), flush=True)
                measured.setdefault(run.name, []).append(run)
    print(f"\nmedians of {args.repeat} runs")
    medians = {name: median_run(runs) for name, runs in measured.items()}
    report(medians)
    each = [
        c.per_cpu_second / r.per_cpu_second
        for c, r in zip(measured["classifier_1p"], measured["receiver_A1"], strict=True)
    ]
    print(
        "  classifier_1p per core / receiver, each repetition: "
        + ", ".join(f"{x:.2f}" for x in each)
    )
    if args.json:
        data = {name: asdict(run) | {"rate": run.rate} for name, run in medians.items()}
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
