"""Several receiver processes sharing the DICOM port, one core each.

Python runs one thread at a time per process, so with concurrent associations one receiver
process is bound to one core. With ``RECEIVER.WORKERS`` = N, the first process (worker 0, the
one started by ``fiona run receiver``) starts N-1 more; all bind the listeners' ports with
``SO_REUSEPORT`` and the kernel spreads new associations among them. Each worker publishes the
events of what it received and keeps its own watermark file; worker 0 alone imports the inbox,
does the start-up rescan (from the oldest watermark of all workers) and serves the HTTP
endpoints, whose metrics add up all workers (prometheus-client's multiprocess mode).
"""

import asyncio
import os
import shutil
import sys
from pathlib import Path

from fiona_common.layout import Layout
from fiona_common.process import Child, stop_children
from fiona_common.settings import Settings

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def watermark_path(layout: Layout, worker_index: int) -> Path:
    suffix = "" if worker_index == 0 else f".w{worker_index}"
    return layout.state_dir / f"receiver-watermark{suffix}.json"


def watermark_paths(layout: Layout) -> list[Path]:
    """The watermark files of every worker that ever ran on this data directory."""
    return sorted(layout.state_dir.glob("receiver-watermark*.json"))


def prepare_metrics_dir(settings: Settings) -> None:
    """Before prometheus-client is imported: with several workers, share metrics through files.

    Worker 0 starts with an empty folder; the other workers inherit its environment.
    """
    rx = settings.receiver
    if rx.workers <= 1 or MULTIPROCESS_ENV in os.environ:
        return
    folder = Layout(settings.datadir).state_dir / "metrics-receiver"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o750, parents=True)
    os.environ[MULTIPROCESS_ENV] = os.fspath(folder)


def worker_children(settings: Settings) -> list[Child]:
    """Workers 1..N-1, run as ``fiona run receiver`` with their index in the environment."""
    children = []
    for index in range(1, settings.receiver.workers):
        env = dict(
            os.environ, FIONA_RECEIVER__WORKER_INDEX=str(index), FIONA_RECEIVER__HTTP_PORT="0"
        )
        argv = [sys.executable, "-m", "fiona_cli", "run", "receiver"]
        if settings.config_file:
            env["FIONA_CONFIG"] = os.fspath(settings.config_file)
        env["FIONA_DATADIR"] = os.fspath(settings.datadir)
        children.append(Child(f"receiver-worker-{index}", argv, env))
    return children


async def supervise_workers(children: list[Child], stop: asyncio.Event) -> None:
    """Keep the other workers running until ``stop``; then stop them (they drain first)."""
    try:
        while not stop.is_set():
            now = asyncio.get_running_loop().time()
            for child in children:
                child.check(now)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        await asyncio.to_thread(stop_children, children)


async def stop_with_parent(stop: asyncio.Event) -> None:
    """A worker whose worker 0 died must not keep the port: stop when orphaned."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
