"""The janitor's file work: disk usage, study sizes, leftovers, stale links, deleting.

Nothing here follows a symbolic link: sizes are of the links themselves, deleting a link leaves
its target alone, and a folder that is a link is deleted as a link.
"""

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fiona_common.layout import Layout, is_valid_uid

STALE_GRACE_SECONDS = 3600.0  # an entry this recent may be in the making: left alone


@dataclass(frozen=True)
class Usage:
    """A file system's usage as ``df`` shows it (root's reserved blocks excluded)."""

    used_bytes: int
    size_bytes: int

    @property
    def ratio(self) -> float:
        return self.used_bytes / self.size_bytes if self.size_bytes else 0.0

    def without(self, freed_bytes: int) -> "Usage":
        return Usage(max(0, self.used_bytes - freed_bytes), self.size_bytes)


def disk_usage(path: Path) -> Usage:
    fs = os.statvfs(path)
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    return Usage(used, used + fs.f_bavail * fs.f_frsize)


@dataclass(frozen=True)
class StudyOnDisk:
    study_uid: str
    size_bytes: int  # archive/scp_<Study> and raw/<Study>
    newest_mtime: float  # of its archive files


def studies_on_disk(layout: Layout) -> list[StudyOnDisk]:
    """Every ``archive/scp_<Study>`` folder with its size and newest file."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(layout.archive_dir):
            uid = entry.name.removeprefix("scp_")
            if uid == entry.name or not is_valid_uid(uid):
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            size, newest = tree_stats(Path(entry.path))
            raw_size, _ = tree_stats(layout.raw_dir / uid)
            found.append(StudyOnDisk(uid, size + raw_size, newest or entry.stat().st_mtime))
    return found


def tree_stats(path: Path) -> tuple[int, float]:
    """Bytes on disk of the entries under ``path`` and the newest modification time."""
    size, newest = 0, 0.0
    for entry in _entries(path):
        st = entry.stat(follow_symlinks=False)
        size += st.st_blocks * 512
        newest = max(newest, st.st_mtime)
    return size, newest


def _entries(path: Path) -> Iterator[os.DirEntry[str]]:
    """Every entry under ``path`` that is not a folder (a folder vanishing meanwhile is empty)."""
    try:
        with os.scandir(path) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    yield from _entries(Path(entry.path))
                else:
                    yield entry
    except (FileNotFoundError, NotADirectoryError):
        return


def paths_bytes(paths: list[Path]) -> int:
    """Bytes on disk of ``paths`` (files, links or folders; missing ones count nothing)."""
    total = 0
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        total += (
            tree_stats(path)[0] if path.is_dir() and not path.is_symlink() else st.st_blocks * 512
        )
    return total


def remove_path(path: Path) -> None:
    """Delete a file, link or folder; already gone is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def leftovers(folder: Path, now: float, max_age_seconds: float) -> list[Path]:
    """Entries of ``folder`` in which nothing changed for ``max_age_seconds``."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            newest = entry.stat(follow_symlinks=False).st_mtime
            if entry.is_dir(follow_symlinks=False):
                newest = max(newest, tree_stats(Path(entry.path))[1])
            if now - newest > max_age_seconds:
                found.append(Path(entry.path))
    return sorted(found)


def study_files(layout: Layout, study_uid: str) -> list[Path]:
    """A study's own files (not its deliveries), in deletion order: the archive last."""
    found = sorted(layout.srs_dir.glob(f"*/{study_uid}"))
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(layout.arrived_dir):
            if entry.name.endswith(f" scp_{study_uid}") or f" {study_uid} " in entry.name:
                found.append(Path(entry.path))
    return [*found, layout.raw_dir / study_uid, layout.study_archive_dir(study_uid)]


@dataclass
class Sweep:
    """Finds (and unless ``dry_run`` removes) stale entries of ``raw/``, ``participants/``,
    ``srs/``: dangling links, series summaries without their folder, then empty folders.

    An entry changed within the last hour is left alone (it may be in the making), except a
    link to a study deleted this round (``gone``). A folder emptied here goes at once.
    """

    now: float
    gone: frozenset[str] = frozenset()
    dry_run: bool = False
    links: int = 0
    summaries: int = 0
    folders: int = 0

    def tree(self, root: Path, summaries: bool = False) -> None:
        """Sweep what is under ``root`` (``summaries``: ``root`` is ``raw/``)."""
        with contextlib.suppress(FileNotFoundError):
            for entry in list(os.scandir(root)):
                if entry.is_dir(follow_symlinks=False):
                    self._folder(Path(entry.path), summaries)
                else:
                    self._entry(entry, set(), summaries=False)

    def _folder(self, path: Path, summaries: bool) -> bool:
        """Sweep ``path``; True if it is gone (or would be, in a dry run)."""
        try:
            mtime = path.lstat().st_mtime
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return True
        folders = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        gone = {e.name for e in entries if e.name in folders and self._folder(Path(e.path), False)}
        folders -= gone  # first, so that a summary whose series folder went is seen as orphaned
        for entry in entries:
            if entry.name not in gone and entry.name not in folders:
                if self._entry(entry, folders, summaries):
                    gone.add(entry.name)
        if len(gone) < len(entries) or not (gone or self._old(mtime)):
            return False
        self.folders += 1
        if not self.dry_run:
            with contextlib.suppress(OSError):  # something arrived meanwhile: it stays
                path.rmdir()
        return True

    def _entry(self, entry: os.DirEntry[str], folders: set[str], summaries: bool) -> bool:
        """Remove ``entry`` if it is a dangling link or (``summaries``) an orphaned summary."""
        if entry.is_dir(follow_symlinks=False):
            return False
        mtime = entry.stat(follow_symlinks=False).st_mtime
        if entry.is_symlink() and not os.path.exists(entry.path):
            if not self._old(mtime) and os.path.basename(os.readlink(entry.path)) not in self.gone:
                return False
            self.links += 1
        elif summaries and entry.name.endswith(".json") and entry.name[:-5] not in folders:
            if not self._old(mtime):
                return False
            self.summaries += 1
        else:
            return False
        if not self.dry_run:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        return True

    def _old(self, mtime: float) -> bool:
        return self.now - mtime > STALE_GRACE_SECONDS
