"""Soak: the chaos driver (tests/chaos.py) for N minutes, with RSS of every service over time.

    .venv/bin/python bench/soak.py --minutes 30 [--seed 11] [--kills-per-minute 4] [--out DIR]

Writes ``rss.csv`` (t_seconds, service, pid, rss_kib) and prints throughput, latency percentiles
(last acknowledged object of a study -> all its acknowledged objects visible in Orthanc),
lost/duplicated counts, kills survived and a memory verdict: the slope of each service's RSS
over the last 2/3 of the run (growth above ``--max-growth-kib-per-min`` is flagged).
Not part of CI.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos import ChaosRig, rss_kib  # noqa: E402


def sample_rss(rig: ChaosRig, stop: threading.Event, out: Path, every: float) -> None:
    started = time.monotonic()
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_seconds", "service", "pid", "rss_kib"])
        while not stop.wait(every):
            for name, pid in sorted(rig.children().items()):
                rss = rss_kib(pid)
                if rss is not None:
                    writer.writerow([round(time.monotonic() - started, 1), name, pid, rss])
            handle.flush()


def watch_latency(rig: ChaosRig, stop: threading.Event, latencies: dict[str, float]) -> None:
    """Record when each study first has all its acknowledged objects in Orthanc."""
    while not stop.wait(2):
        counts = rig.delivered_per_participant()
        now = time.time()
        for study in list(rig.studies):
            done = study.acked and counts.get(study.participant, 0) >= len(study.acked)
            if done and study.participant not in latencies:
                latencies[study.participant] = now - study.last_ack_at


def slope_kib_per_min(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time (time in seconds) in KiB per minute."""
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else 60 * sum((x - mx) * (y - my) for x, y in points) / var


def memory_verdict(csv_path: Path, limit: float) -> list[str]:
    """Per service: RSS range and the growth within its longest-lived process.

    Kills restart services, so a slope across processes measures restarts, not leaks: growth
    is judged within one process (the one sampled longest; at least 6 samples).
    """
    by_pid: dict[str, dict[str, list[tuple[float, int]]]] = {}
    with csv_path.open() as handle:
        for row in csv.DictReader(handle):
            point = (float(row["t_seconds"]), int(row["rss_kib"]))
            by_pid.setdefault(row["service"], {}).setdefault(row["pid"], []).append(point)
    lines = []
    for name, processes in sorted(by_pid.items()):
        rss = [p[1] for points in processes.values() for p in points]
        longest = max(processes.values(), key=lambda points: points[-1][0] - points[0][0])
        span = (longest[-1][0] - longest[0][0]) / 60
        if len(longest) < 6:
            verdict = f"{len(processes)} processes, none sampled long enough to judge"
        else:
            slope = slope_kib_per_min(longest[len(longest) // 3 :])
            growth = "GROWS" if slope > limit else "flat"
            verdict = (
                f"{len(processes)} processes; the longest ({span:.0f} min): "
                f"{slope:+.0f} KiB/min over its last 2/3: {growth}"
            )
        lines.append(f"  {name:12s} rss min/max {min(rss)}/{max(rss)} KiB, {verdict}")
    return lines


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--kills-per-minute", type=float, default=4)
    parser.add_argument("--nats-restarts-per-minute", type=float, default=0.5)
    parser.add_argument("--sample-seconds", type=float, default=10)
    parser.add_argument("--max-growth-kib-per-min", type=float, default=512)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fiona-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    rig = ChaosRig(out, seed=args.seed)
    stop = threading.Event()
    latencies: dict[str, float] = {}
    rss_csv = out / "rss.csv"
    try:
        rig.start()
        watchers = [
            threading.Thread(target=sample_rss, args=(rig, stop, rss_csv, args.sample_seconds)),
            threading.Thread(target=watch_latency, args=(rig, stop, latencies)),
        ]
        for thread in watchers:
            thread.start()
        kills = round(args.kills_per_minute * args.minutes)
        restarts = round(args.nats_restarts_per_minute * args.minutes)
        rig.run(seconds, kills=kills, nats_restarts=restarts)
        rig.wait_ready(timeout=60)
        counts = rig.wait_quiescent(timeout=180)
        stop.set()
        for thread in watchers:
            thread.join(30)
        report = rig.check(counts)
    finally:
        stop.set()
        rig.stop()
    lat = list(latencies.values())
    print(f"soak: {args.minutes} min, seed {args.seed}, output {out}")
    print(report.summary())
    print(f"throughput: {report.acknowledged / report.seconds:.1f} acknowledged objects/s")
    print(
        f"latency (last ack -> in PACS) over {len(lat)} studies: p50 {percentile(lat, 0.5):.1f}s "
        f"p90 {percentile(lat, 0.9):.1f}s p99 {percentile(lat, 0.99):.1f}s "
        f"max {max(lat or [0]):.1f}s"
    )
    print("memory:")
    print("\n".join(memory_verdict(rss_csv, args.max_growth_kib_per_min)))
    for problem in [*report.problems, *report.losses]:
        print("PROBLEM", problem)
    return 1 if report.problems or report.losses else 0


if __name__ == "__main__":
    sys.exit(main())
