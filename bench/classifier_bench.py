"""Classifier throughput: indexing + classification of the receiver benchmark's corpus A.

Measures, in one run: a plain ``pydicom.dcmread(stop_before_pixels=True)`` of every file (the
floor: what reading the headers alone costs), then the classifier service with one and with
two processes, from the moment the "instance stored" events are published until the durable
consumer has acknowledged all of them. Every classifier run gets a fresh nats-server and data
directory. Prints objects/s and the ratios.

    python bench/classifier_bench.py [--rules classifyRules.json] [--scale 0.5]

The receiver benchmark (bench/receiver_bench.py) gives the receiver's objects/s to compare with
(the goal: the classifier at least 2x the receiver per core).
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
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


def floor_rate(files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        dcmread(path, stop_before_pixels=True)
    return len(files) / (time.perf_counter() - started)


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


def classifier_rate(files: list[Path], processes: int, rules: Path | None, scratch: Path) -> float:
    workdir = Path(tempfile.mkdtemp(prefix=f"classifier{processes}-", dir=scratch))
    with rb.Processes(workdir) as procs:
        port = rb.free_port()
        procs.spawn(
            "nats",
            [
                "nats-server",
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-sd",
                str(workdir / "nats"),
            ],
        )
        url = f"nats://127.0.0.1:{port}"
        rb.wait_until(lambda: rb.tcp_open(port), 20, "nats-server")
        events = archive(files, Layout(workdir / "data"))
        env = {"FIONA_DATADIR": str(workdir / "data"), "FIONA_NATS_URL": url}
        if rules:
            env["FIONA_CLASSIFIER__RULES_FILE"] = str(rules)
        for n in range(processes):
            http = rb.free_port()
            procs.spawn(
                f"classifier{n}",
                [sys.executable, "-m", "fiona_cli", "run", "classifier"],
                {**env, "FIONA_CLASSIFIER__HTTP_PORT": str(http)},
            )
            rb.wait_until(
                lambda h=http: rb.http_status(f"http://127.0.0.1:{h}/readyz") == 200,
                60,
                f"classifier {n}",
            )
        started = time.perf_counter()
        asyncio.run(publish(url, events))
        rb.wait_until(lambda: asyncio.run(backlog(url)) == 0, 600, "classifier backlog")
        return len(files) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, help="a classifyRules.json (default: FIONA's)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--corpus-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fiona-cbench-") as tmp:
        scratch = Path(tmp)
        corpus = rb.prepare_corpus(args.corpus_dir or scratch, "A", args.scale)
        files = corpus_files(corpus)
        results = {"objects": len(files), "floor_dcmread": floor_rate(files)}
        for processes in (1, 2):
            results[f"classifier_{processes}p"] = classifier_rate(
                files, processes, args.rules, scratch
            )
    print(f"{'what':<26}{'objects/s':>10}{'x floor':>9}")
    for name, rate in results.items():
        if name != "objects":
            print(f"{name:<26}{rate:>10.1f}{rate / results['floor_dcmread']:>9.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
