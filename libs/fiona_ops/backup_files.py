"""The files of a backup: which ones, copied how, checked how, put back how.

A backup holds three kinds of files, each under ``files/<site>/<path in the data directory>``
(or ``external/<id>/...`` for configured files outside every data directory):

- configuration: ``config/``, ``state/secrets/`` (keys and tokens), ``state/redcap/`` and the
  receiver's watermark files, plus the rule file, projects file and key files the settings
  name wherever they are; always copied;
- trees: ``site/raw``, ``site/participants``, ``site/srs`` and ``site/.arrived`` (series
  summaries and relative links), always included;
- data, with ``--archive``: ``site/archive``, ``outbox`` and ``quarantine``.

Trees and data are incremental: a file whose path, size and modification time equal the
previous backup's is hard-linked from it instead of copied (archive files never change once
written), so every backup is complete on its own while only new files cost space and time.
Everything is written 0600 in 0700 folders; the original mode is kept in the manifest.
"""

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from hashlib import sha256
from pathlib import Path

from pydantic import BaseModel

from fiona_common.layout import DIR_MODE
from fiona_common.settings import Settings

BACKUP_DIR_MODE = 0o700
BACKUP_FILE_MODE = 0o600
_CHUNK = 1 << 20


class Kind(StrEnum):
    FILE = "file"
    LINK = "link"  # a symbolic link, kept as a link (the trees' links are relative)
    DUMP = "dump"  # JetStream state written by the backup itself, restored through NATS


class Entry(BaseModel):
    """One file of a backup as the manifest lists it (names and checksums, never contents)."""

    name: str  # path inside the backup
    kind: Kind
    site: str | None = None  # restored into this site's data directory ...
    target: str | None = None  # ... at this relative path; absolute when ``site`` is None
    size: int = 0
    sha256: str = ""
    mode: str = "0600"  # the original's permission bits, octal
    mtime_ns: int = 0
    link: str = ""  # a link's target text


@dataclass(frozen=True)
class Source:
    """One file or link to back up."""

    path: Path
    name: str
    site: str | None
    target: str
    incremental: bool  # may be hard-linked from the previous backup when unchanged


@dataclass
class CopyCounts:
    copied: int = 0
    linked: int = 0  # unchanged since the previous backup: hard-linked, not copied
    bytes_copied: int = 0


def sites(settings: Settings) -> dict[str, Path]:
    """Every data directory (the default one and one per ``SITES`` project) by site name."""
    return {listener.name: listener.datadir for listener in settings.listeners()}


def config_sources(settings: Settings) -> list[Source]:
    """Configuration, secrets and bookkeeping of every site, and configured files elsewhere."""
    found: dict[str, Source] = {}
    for site, datadir in sites(settings).items():
        for folder in ("config", "state/secrets", "state/redcap"):
            for source in walk(datadir, folder, site, incremental=False):
                found[source.name] = source
        for mark in sorted((datadir / "state").glob("receiver-watermark*.json")):
            source = _site_source(site, datadir, mark, incremental=False)
            found[source.name] = source
    for path in configured_paths(settings):
        for source in _anywhere(settings, path):
            found.setdefault(source.name, source)
    return list(found.values())


def tree_sources(settings: Settings) -> Iterator[Source]:
    for site, datadir in sites(settings).items():
        for folder in ("site/raw", "site/participants", "site/srs", "site/.arrived"):
            yield from walk(datadir, folder, site, incremental=True)


def data_sources(settings: Settings) -> Iterator[Source]:
    for site, datadir in sites(settings).items():
        for folder in ("site/archive", "outbox", "quarantine"):
            yield from walk(datadir, folder, site, incremental=True)


def configured_paths(settings: Settings) -> list[Path]:
    """Files and folders the settings name, which may lie outside the data directories."""
    rs = settings.redcap_sync
    candidates = [
        settings.config_file,
        settings.classifier.rules_file,
        rs.projects_file,
        rs.key_file,
        rs.api_token_file,
        rs.redcap.tokens_dir,
        rs.redcap.ca_bundle,
        settings.exporter.key_file,
    ]
    return [p.expanduser().resolve() for p in candidates if p is not None]


def _anywhere(settings: Settings, path: Path) -> Iterator[Source]:
    """``path`` (file or folder) as site files when inside a data directory, else external."""
    for site, datadir in sites(settings).items():
        if path.is_relative_to(datadir):
            yield from walk(datadir, path.relative_to(datadir).as_posix(), site, False)
            return
    ident = hashlib.sha256(os.fsencode(path)).hexdigest()[:12]
    if path.is_dir():
        for item in _files_under(path):
            relative = item.relative_to(path).as_posix()
            name = f"external/{ident}/{path.name}/{relative}"
            yield Source(item, name, None, str(item), incremental=False)
    elif path.is_file():
        yield Source(path, f"external/{ident}/{path.name}", None, str(path), incremental=False)


def walk(datadir: Path, folder: str, site: str, incremental: bool) -> Iterator[Source]:
    """Files and links under ``datadir/folder`` (a file itself, if ``folder`` is one)."""
    root = datadir / folder
    if root.is_file() or root.is_symlink():
        yield _site_source(site, datadir, root, incremental)
        return
    for item in _files_under(root):
        yield _site_source(site, datadir, item, incremental)


def _site_source(site: str, datadir: Path, path: Path, incremental: bool) -> Source:
    relative = path.relative_to(datadir).as_posix()
    return Source(path, f"files/{site}/{relative}", site, relative, incremental)


def _files_under(root: Path) -> Iterator[Path]:
    """Regular files and symbolic links below ``root``, in a stable order; links not followed."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder)
        for name in sorted(files):
            yield base / name
        for name in dirs:  # os.walk lists links to folders as folders and never enters them
            if (base / name).is_symlink():
                yield base / name


def copy_sources(
    sources: Iterator[Source] | list[Source],
    staging: Path,
    previous: dict[str, Entry],
    previous_dir: Path | None,
    counts: CopyCounts,
) -> list[Entry]:
    """Copy (or hard-link from the previous backup) each source into ``staging``."""
    entries = []
    for source in sources:
        try:
            stat = source.path.lstat()
        except FileNotFoundError:
            continue  # removed while the backup ran (a temporary file, a cleaned-up study)
        destination = staging / source.name
        _make_parents(destination, staging)
        entry = Entry(
            name=source.name,
            kind=Kind.LINK if source.path.is_symlink() else Kind.FILE,
            site=source.site,
            target=source.target,
            mode=f"{stat.st_mode & 0o7777:04o}",
            mtime_ns=stat.st_mtime_ns,
        )
        if entry.kind is Kind.LINK:
            entry.link = os.readlink(source.path)
            os.symlink(entry.link, destination)
        else:
            before = previous.get(source.name) if source.incremental else None
            reused = _reuse(before, stat, previous_dir, destination)
            if reused is not None:
                entry.size, entry.sha256 = stat.st_size, reused
                counts.linked += 1
            else:
                entry.size, entry.sha256 = copy_hashing(source.path, destination)
                counts.copied += 1
                counts.bytes_copied += entry.size
        entries.append(entry)
    return entries


def _reuse(
    before: Entry | None, stat: os.stat_result, previous_dir: Path | None, destination: Path
) -> str | None:
    """Hard-link the previous backup's copy if the file is unchanged; its checksum, or None."""
    if before is None or previous_dir is None or before.kind is not Kind.FILE:
        return None
    if before.size != stat.st_size or before.mtime_ns != stat.st_mtime_ns:
        return None
    try:
        os.link(previous_dir / before.name, destination)
    except OSError:  # gone, or another file system: copy instead
        return None
    return before.sha256


def _make_parents(path: Path, top: Path) -> None:
    missing = []
    parent = path.parent
    while parent != top and not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=BACKUP_DIR_MODE, exist_ok=True)


def copy_hashing(source: Path, destination: Path, mode: int = BACKUP_FILE_MODE) -> tuple[int, str]:
    """Copy ``source`` to a new file ``destination`` (``mode``), keeping its modification time;
    its size and SHA-256 (one read)."""
    digest = sha256()
    size = 0
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    shutil.copystat(source, destination)
    os.chmod(destination, mode)
    return size, digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dump_entry(backup: Path, name: str) -> Entry:
    """The manifest entry of a file the backup wrote itself (JetStream state)."""
    path = backup / name
    os.chmod(path, BACKUP_FILE_MODE)
    return Entry(name=name, kind=Kind.DUMP, size=path.stat().st_size, sha256=file_sha256(path))


def check_entry(backup: Path, entry: Entry) -> str | None:
    """What is wrong with ``entry``'s copy in ``backup`` (None: it is intact)."""
    path = backup / entry.name
    if entry.kind is Kind.LINK:
        if not path.is_symlink():
            return f"{entry.name}: missing"
        return None if os.readlink(path) == entry.link else f"{entry.name}: link changed"
    if not path.is_file() or path.is_symlink():
        return f"{entry.name}: missing"
    if path.stat().st_mode & 0o077:
        return f"{entry.name}: readable by others (mode {path.stat().st_mode & 0o777:04o})"
    if path.stat().st_size != entry.size or file_sha256(path) != entry.sha256:
        return f"{entry.name}: checksum mismatch"
    return None


def target_path(entry: Entry, site_dirs: dict[str, Path]) -> Path | None:
    """Where ``entry`` is restored (None: not a file to put back, or an unknown site)."""
    if entry.kind is Kind.DUMP or entry.target is None:
        return None
    if entry.site is None:
        return Path(entry.target)
    datadir = site_dirs.get(entry.site)
    return None if datadir is None else datadir / entry.target


def put_back(backup: Path, entry: Entry, target: Path) -> None:
    """Restore one file or link at ``target`` with its original mode and modification time."""
    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore.tmp")
    tmp.unlink(missing_ok=True)
    if entry.kind is Kind.LINK:
        os.symlink(entry.link, tmp)
    else:
        copy_hashing(backup / entry.name, tmp, mode=int(entry.mode, 8))
        os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
    os.replace(tmp, target)
