#!/usr/bin/env python3
"""How fast the exporter's C-STORE client sends staged files, against DCMTK's storescu.

Four senders push the same files to one DCMTK storescp (``--ignore``: it receives but does not
write, so the receiving side costs little) on loopback, each in turn, ``--rounds`` times:

- ``fiona (own SCU)``: services.exporter.dicom_node.send_files, which sends each file's bytes as
  they are through services/exporter/store_scu.py;
- ``pynetdicom (as-is)``: pynetdicom sending each file's bytes as they are
  (``STORE_SEND_CHUNKED_DATASET``, what the exporter did before store_scu.py);
- ``pynetdicom (decode+encode)``: pynetdicom with each file read into a Dataset and encoded
  again (what the exporter did before that);
- ``storescu``: DCMTK, the floor.

Prints objects/s (wall) and the sender's CPU milliseconds per object, and the ratios.

    .venv/bin/python bench/export_send_bench.py [--count 300] [--size 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmread  # noqa: E402
from pynetdicom import _config  # noqa: E402

from fiona_common.dicomfile import read_file_meta  # noqa: E402
from services.exporter import dicom_node  # noqa: E402
from services.exporter.dicom_node import Node, send_files  # noqa: E402
from tests.builders import write_series  # noqa: E402
from tests.peers import free_port  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}


def pynetdicom_send(files: list[Path], node: Node, as_is: bool) -> int:
    """pynetdicom on one association: each file's bytes as they are (``as_is``, the exporter
    before store_scu.py), or decoded into a Dataset and encoded again (before that)."""
    ae = dicom_node.AE(ae_title=node.calling_aet)
    for context in dict.fromkeys(dicom_node.context_of(read_file_meta(f)) for f in files):
        ae.add_requested_context(*context)
    assoc = node.associate(ae)
    ok = 0
    _config.STORE_SEND_CHUNKED_DATASET = as_is
    try:
        for path in files:
            ok += int(assoc.send_c_store(path if as_is else dcmread(path)).Status == 0)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    return ok


def decode_and_encode(files: list[Path], node: Node) -> int:
    return pynetdicom_send(files, node, as_is=False)


def pynetdicom_as_is(files: list[Path], node: Node) -> int:
    return pynetdicom_send(files, node, as_is=True)


def fiona(files: list[Path], node: Node) -> int:
    return sum(1 for outcome in send_files(files, node) if outcome.sent == "ok")


def storescu(files: list[Path], node: Node) -> int:
    subprocess.run(
        ["/usr/bin/storescu", "-aec", node.aet, node.host, str(node.port), *map(str, files)],
        env=ENV,
        check=True,
    )
    return len(files)


def cpu_seconds(children: bool) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(sender, files: list[Path], node: Node) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    children = sender is storescu
    started, cpu = time.perf_counter(), cpu_seconds(children)
    sent = sender(files, node)
    wall, used = time.perf_counter() - started, cpu_seconds(children) - cpu
    if sent != len(files):
        raise SystemExit(f"{sender.__name__}: {len(files) - sent} objects not stored")
    return len(files) / wall, used * 1000 / len(files)


LABELS = {
    "fiona": "fiona (own SCU)",
    "pynetdicom_as_is": "pynetdicom (as-is)",
    "decode_and_encode": "pynetdicom (decode+encode)",
    "storescu": "storescu",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=256, help="rows = columns, 16-bit pixels")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_series(Path(tmp) / "in", args.count, rows=args.size, cols=args.size)
        size = files[0].stat().st_size
        port = free_port()
        scp = subprocess.Popen(["/usr/bin/storescp", "--ignore", str(port)], env=ENV)
        time.sleep(1.0)
        node = Node("STORESCP", "127.0.0.1", port)
        results: dict[str, list[tuple[float, float]]] = {}
        try:
            for _ in range(args.rounds):
                for sender in (fiona, pynetdicom_as_is, decode_and_encode, storescu):
                    results.setdefault(sender.__name__, []).append(measure(sender, files, node))
        finally:
            scp.terminate()
            scp.wait()
    print(f"{args.count} objects of {size} bytes, {args.rounds} rounds (median)")
    medians = {
        name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        for name, runs in results.items()
    }
    for name, (rate, cpu) in medians.items():
        print(f"{LABELS[name]:27s} {rate:7.0f} objects/s  {cpu:6.2f} ms CPU/object")
    fiona_rate = medians["fiona"][0]
    for name in ("pynetdicom_as_is", "decode_and_encode", "storescu"):
        print(f"fiona (own SCU) / {LABELS[name]}: {fiona_rate / medians[name][0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
