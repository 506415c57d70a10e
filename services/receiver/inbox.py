"""``inbox/``: files and folders dropped there are imported like received objects.

watchdog reports new and changed files; a file is imported once its size and modification time
have not changed for ``settle_seconds`` (it is completely written). Imported files are removed
from the inbox; non-DICOM files are moved to quarantine with a reason; a file that cannot be
archived now (full disk) stays and is retried. A periodic rescan catches what the file-system
notifications missed (and what was dropped while the receiver was down).
"""

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from fiona_common.messages import StoredVia
from fiona_common.quarantine import quarantine
from services.receiver import metrics
from services.receiver.ingest import Incoming, IngestDeps, Origin, Result, timed_ingest

log = logging.getLogger(__name__)

_ORIGIN = Origin(calling_aet="", called_aet="", peer_address="", via=StoredVia.INBOX)
RESCAN_SECONDS = 30.0
EMPTY_DIR_AGE_SECONDS = 60.0


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable_since: float


@dataclass
class InboxImporter:
    """Watches one data directory's ``inbox/`` and imports what settles there."""

    deps: IngestDeps
    settle_seconds: float
    _candidates: dict[Path, _Seen | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def inbox(self) -> Path:
        return self.deps.layout.inbox_dir

    def notice(self, path: Path) -> None:
        """A file appeared or changed (any thread)."""
        if not any(part.startswith(".") for part in path.relative_to(self.inbox).parts):
            with self._lock:
                self._candidates.setdefault(path, None)

    def rescan(self) -> None:
        for root, _dirs, files in os.walk(self.inbox):
            for name in files:
                self.notice(Path(root) / name)

    def import_settled(self, now: float) -> int:
        """Import every candidate that has settled; returns how many were handled."""
        with self._lock:
            candidates = list(self._candidates.items())
        handled = 0
        for path, seen in candidates:
            current = _stat(path)
            if current is None:
                self._forget(path)
                continue
            if seen is None or (seen.size, seen.mtime_ns) != (current.size, current.mtime_ns):
                with self._lock:
                    self._candidates[path] = _Seen(current.size, current.mtime_ns, now)
                continue
            if now - seen.stable_since >= self.settle_seconds and self.import_file(path):
                self._forget(path)
                handled += 1
        return handled

    def import_file(self, path: Path) -> bool:
        """Import one settled file; False if it must be retried later."""
        staging = self.deps.layout.incoming_dir
        fd, tmp_name = tempfile.mkstemp(prefix="inbox-", suffix=".dcm", dir=staging)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            shutil.copyfile(path, tmp)
            if not _looks_like_dicom(tmp):
                quarantine(
                    self.deps.layout,
                    code="not_dicom",
                    source=path,
                    move=True,
                    message="file in inbox/ is not a DICOM Part 10 file",
                )
                metrics.QUARANTINED.labels("not_dicom").inc()
                metrics.INBOX_IMPORTS.labels("quarantined").inc()
                return True
            result = timed_ingest(Incoming(tmp, _ORIGIN), self.deps)
        except OSError as err:
            log.error("inbox import failed, will retry", extra={"error": err.strerror})
            metrics.INBOX_IMPORTS.labels("retry").inc()
            return False
        finally:
            tmp.unlink(missing_ok=True)
        metrics.INBOX_IMPORTS.labels(result).inc()
        if result is Result.NO_SPACE:
            return False
        path.unlink(missing_ok=True)  # archived, a duplicate, or its copy is in quarantine
        return True

    def prune_empty_dirs(self, now: float) -> None:
        for root, dirs, files in os.walk(self.inbox, topdown=False):
            folder = Path(root)
            if folder != self.inbox and not dirs and not files:
                try:
                    if now - folder.stat().st_mtime > EMPTY_DIR_AGE_SECONDS:
                        folder.rmdir()
                except OSError:
                    pass  # re-used or already gone: both fine

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._candidates.pop(path, None)

    def start_watching(self) -> BaseObserver:
        """Start watchdog on the inbox (recursively); the caller stops the observer."""
        importer = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                target = getattr(event, "dest_path", "") or event.src_path
                importer.notice(Path(os.fsdecode(target)))

        observer = Observer()
        observer.schedule(Handler(), os.fspath(self.inbox), recursive=True)
        observer.start()
        return observer


@dataclass(frozen=True)
class _Stat:
    size: int
    mtime_ns: int


def _stat(path: Path) -> _Stat | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _Stat(st.st_size, st.st_mtime_ns)


def _looks_like_dicom(path: Path) -> bool:
    """A Part 10 file: 128-byte preamble then ``DICM`` (what DCMTK's dcmftest checks)."""
    with path.open("rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def run_importer(importer: InboxImporter, stop: threading.Event, tick: float = 0.25) -> None:
    """The importer's loop, on its own thread: settle, import, rescan, prune."""
    importer.rescan()
    last_rescan = time.monotonic()
    while not stop.wait(tick):
        now = time.monotonic()
        importer.import_settled(now)
        if now - last_rescan > RESCAN_SECONDS:
            importer.rescan()
            importer.prune_empty_dirs(time.time())
            last_rescan = now
