"""``fiona backup create|verify|restore``: FIONA's state in one folder, and back.

A backup is a folder ``<DEST>/fiona-backup-<UTC time>/`` with ``manifest.json`` (every file's
name, size, mode and SHA-256; never a secret's contents), the files (:mod:`backup_files`) and
the JetStream state (:mod:`backup_streams`). It is written as ``.<name>.partial`` and renamed
once complete, so a folder without that prefix is always whole.

Consistent means here: every effect recorded in the key-value buckets has its cause in the
streams. The steps run in this order: configuration and the receiver's watermark, then the
buckets, then the streams (each up to its last message when its read began), then the trees
and the archive. On restore every consumer reads its stream again from the start; the handlers
are idempotent, so what the buckets already record changes nothing and what happened after
they were read is done again; archive files are written before their events, so every event
in the backup finds its file; files archived after the streams were read are newer than the
watermark and the receiver publishes them when it starts.
"""

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ValidationError

from fiona_common.errors import FionaError
from fiona_common.layout import Layout, fsync_dir
from fiona_common.nats_auth import NatsTarget, nats_target
from fiona_common.settings import Settings
from fiona_ops import backup_streams
from fiona_ops.backup_files import (
    BACKUP_DIR_MODE,
    CopyCounts,
    Entry,
    Kind,
    check_entry,
    config_sources,
    copy_sources,
    data_sources,
    dump_entry,
    file_sha256,
    put_back,
    sites,
    target_path,
    tree_sources,
)
from fiona_ops.backup_streams import StreamRecord

FORMAT = 1
PREFIX = "fiona-backup-"
MANIFEST = "manifest.json"
CHECKSUM = "manifest.json.sha256"


class Manifest(BaseModel):
    """What a backup holds: files with checksums, streams, where each site's data lived."""

    format: int = FORMAT
    created_at: datetime
    host: str
    sites: dict[str, str]  # site -> its data directory when the backup was made
    archive: bool  # site/archive, outbox and quarantine included
    previous: str | None  # the backup unchanged files were hard-linked from
    files: list[Entry]
    streams: list[StreamRecord]
    copied: int
    linked: int
    bytes_copied: int


class JetStreamState(Protocol):
    """Reading and writing JetStream's state (a parameter, so tests can do without NATS)."""

    def dump(self, folder: Path) -> list[StreamRecord]: ...

    def next_sequences(self) -> dict[str, int]: ...

    def occupied(self, records: list[StreamRecord]) -> list[str]: ...

    def load(self, backup: Path, records: list[StreamRecord]) -> dict[str, tuple[int, int]]: ...


@dataclass(frozen=True)
class NatsState:
    """The JetStream state of the NATS at ``url`` (with its credentials)."""

    url: NatsTarget | str

    def dump(self, folder: Path) -> list[StreamRecord]:
        return asyncio.run(backup_streams.dump(self.url, folder))

    def next_sequences(self) -> dict[str, int]:
        return asyncio.run(backup_streams.next_sequences(self.url))

    def occupied(self, records: list[StreamRecord]) -> list[str]:
        return asyncio.run(backup_streams.occupied(self.url, records))

    def load(self, backup: Path, records: list[StreamRecord]) -> dict[str, tuple[int, int]]:
        return asyncio.run(backup_streams.load(self.url, backup, records))


def create_backup(settings: Settings, dest: Path, archive: bool, state: JetStreamState) -> Path:
    """Write a new backup into the folder ``dest``; returns the backup's folder."""
    if any(dest.resolve().is_relative_to(d) for d in sites(settings).values()):
        raise FionaError(f"{dest} is inside a data directory: keep backups elsewhere")
    dest.mkdir(mode=BACKUP_DIR_MODE, parents=True, exist_ok=True)
    previous_dir = latest_backup(dest)
    previous = read_manifest(previous_dir) if previous_dir else None
    before = {e.name: e for e in previous.files} if previous else {}
    name = _new_name(dest)
    staging = dest / f".{name}.partial"
    staging.mkdir(mode=BACKUP_DIR_MODE)
    try:
        counts = CopyCounts()
        created = datetime.now(UTC)
        files = copy_sources(config_sources(settings), staging, {}, None, counts)
        streams = state.dump(staging)
        files += [dump_entry(staging, r.config_file) for r in streams]
        files += [dump_entry(staging, r.messages_file) for r in streams]
        files += copy_sources(tree_sources(settings), staging, before, previous_dir, counts)
        if archive:
            files += copy_sources(data_sources(settings), staging, before, previous_dir, counts)
        resume = state.next_sequences()
        for record in streams:
            record.resume_seq = max(record.resume_seq, resume.get(record.name, 1))
        manifest = Manifest(
            created_at=created,
            host=socket.gethostname(),
            sites={site: str(path) for site, path in sites(settings).items()},
            archive=archive,
            previous=previous_dir.name if previous_dir else None,
            files=files,
            streams=streams,
            copied=counts.copied,
            linked=counts.linked,
            bytes_copied=counts.bytes_copied,
        )
        _write_manifest(staging, manifest)
        os.sync()  # every copied file on disk before the backup counts as complete
        final = dest / name
        staging.rename(final)
        fsync_dir(dest)
        return final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _new_name(dest: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = f"{PREFIX}{stamp}", 1
    while (dest / name).exists() or (dest / f".{name}.partial").exists():
        n += 1
        name = f"{PREFIX}{stamp}-{n}"
    return name


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    data = manifest.model_dump_json(indent=1).encode()
    for name, content in ((MANIFEST, data), (CHECKSUM, _sha256_line(data))):
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)


def _sha256_line(data: bytes) -> bytes:
    return f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n".encode()


def latest_backup(folder: Path) -> Path | None:
    """The newest complete backup in ``folder`` (names sort by time), or None."""
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / MANIFEST).exists()]
    return max(found, key=lambda p: p.name) if found else None


def resolve_backup(path: Path) -> Path:
    """``path`` itself if it is a backup, else the newest backup in it."""
    if (path / MANIFEST).exists():
        return path
    found = latest_backup(path)
    if found is None:
        raise FionaError(f"{path} is not a FIONA backup and holds none")
    return found


def read_manifest(backup: Path) -> Manifest:
    try:
        return Manifest.model_validate_json((backup / MANIFEST).read_bytes())
    except (OSError, ValidationError) as err:
        raise FionaError(f"{backup}: unreadable manifest ({type(err).__name__})") from None


def verify_backup(backup: Path) -> list[str]:
    """What is wrong with ``backup`` (empty: every file is there with its checksum)."""
    data = (backup / MANIFEST).read_bytes()
    try:
        recorded = (backup / CHECKSUM).read_bytes()
    except FileNotFoundError:
        return [f"{CHECKSUM} is missing"]
    if recorded != _sha256_line(data):
        return [f"{MANIFEST} does not match {CHECKSUM}"]
    manifest = read_manifest(backup)
    problems = [p for p in (check_entry(backup, e) for e in manifest.files) if p]
    listed = {e.name for e in manifest.files} | {MANIFEST, CHECKSUM}
    problems += [f"{name}: not in the manifest" for name in _names_in(backup) - listed]
    if backup.stat().st_mode & 0o077:
        problems.append(f"{backup} is accessible to others (should be 0700)")
    return problems


def _names_in(backup: Path) -> set[str]:
    names = set()
    for folder, dirs, files in os.walk(backup):
        base = Path(folder)
        for name in files + [d for d in dirs if (base / d).is_symlink()]:
            names.add((base / name).relative_to(backup).as_posix())
    return names


@dataclass(frozen=True)
class Restored:
    backup: Path
    files: int
    streams: int
    messages: int
    dropped: int  # duplicates JetStream dropped (the same Nats-Msg-Id stored twice)


def restore_backup(
    settings: Settings, source: Path, force: bool, state: JetStreamState
) -> Restored:
    """Put ``source`` back into the configured data directories and NATS (empty, or ``force``)."""
    backup = resolve_backup(source)
    problems = verify_backup(backup)
    if problems:
        raise FionaError(f"{backup} is damaged ({len(problems)} problems, first: {problems[0]})")
    manifest = read_manifest(backup)
    site_dirs = {name: Path(path) for name, path in manifest.sites.items()} | sites(settings)
    targets = [(e, t) for e in manifest.files if (t := target_path(e, site_dirs)) is not None]
    blockers = _conflicts(backup, targets, site_dirs) + state.occupied(manifest.streams)
    if blockers and not force:
        more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
        raise FionaError(f"the target is not empty: {blockers[0]}{more}; --force overwrites")
    for entry, target in targets:
        put_back(backup, entry, target)
    loaded = state.load(backup, manifest.streams)
    return Restored(
        backup=backup,
        files=len(targets),
        streams=len(loaded),
        messages=sum(stored for stored, _ in loaded.values()),
        dropped=sum(dropped for _, dropped in loaded.values()),
    )


def _conflicts(
    backup: Path, targets: list[tuple[Entry, Path]], site_dirs: dict[str, Path]
) -> list[str]:
    """Files in the way: anything in a data directory (but the NATS store), or an existing
    configured file, that differs from what the backup would put there."""
    wanted = {target: entry for entry, target in targets}
    found = []
    for datadir in site_dirs.values():
        nats_store = datadir / "state" / "nats"
        for folder, dirs, files in os.walk(datadir):
            base = Path(folder)
            dirs[:] = [d for d in dirs if base / d != nats_store]
            for name in files + [d for d in dirs if (base / d).is_symlink()]:
                found.append(base / name)
    present = set(found) | {t for t in wanted if t.exists() or t.is_symlink()}
    return [f"{p} exists" for p in sorted(present) if not _same(backup, wanted.get(p), p)]


def _same(backup: Path, entry: Entry | None, path: Path) -> bool:
    if entry is None:
        return False
    if entry.kind is Kind.LINK:
        return path.is_symlink() and os.readlink(path) == entry.link
    return path.is_file() and not path.is_symlink() and file_sha256(path) == entry.sha256


@contextlib.contextmanager
def nats_url_for(settings: Settings, restoring: bool) -> Iterator[str]:
    """The NATS to use: the configured one; else ``fiona up``'s local one if it runs (never for
    a restore: FIONA must be stopped), else that local NATS started just for this command."""
    if settings.nats_url:
        yield settings.nats_url
        return
    port = settings.local_nats_port
    url = f"nats://127.0.0.1:{port}"
    if _port_open(port):
        if restoring:
            raise FionaError(
                f"something listens on port {port} (fiona up?): stop FIONA before restoring"
            )
        yield url
        return
    from fiona_cli.supervisor import nats_child

    argv = nats_child(settings, Layout(settings.datadir)).argv
    nats = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _port_open(port):
            if nats.poll() is not None or time.monotonic() > deadline:
                raise FionaError(f"could not start nats-server on port {port}")
            time.sleep(0.1)
        yield url
    finally:
        nats.terminate()
        try:
            nats.wait(15)
        except subprocess.TimeoutExpired:
            nats.kill()
            nats.wait()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_command(
    action: str, path: Path, settings: Callable[[], Settings], archive: bool, force: bool
) -> int:
    """``fiona backup ACTION``: do it and say what happened; the exit code."""
    if action == "verify":
        found = resolve_backup(path)
        problems = verify_backup(found)
        for problem in problems[:20]:
            print(f"{found}: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"{found}: intact, {_counts(read_manifest(found))}")
        return 0
    config = settings()
    with nats_url_for(config, restoring=action == "restore") as url:
        if action == "create":
            made = create_backup(config, path, archive, NatsState(nats_target(config, url)))
            manifest = read_manifest(made)
            print(f"backup written: {made}")
            print(
                f"{_counts(manifest)}; {manifest.copied} files copied, {manifest.linked} "
                "unchanged since the previous backup (hard-linked)"
            )
            print("it holds FIONA's keys (state/secrets): keep it as protected as the data")
            return 0
        done = restore_backup(config, path, force, NatsState(nats_target(config, url)))
    print(
        f"restored {done.backup}: {done.files} files, {done.streams} streams and buckets "
        f"({done.messages} messages); start FIONA and pending transfers resume"
    )
    return 0


def _counts(manifest: Manifest) -> str:
    files = sum(1 for e in manifest.files if e.kind is not Kind.DUMP)
    messages = sum(r.messages for r in manifest.streams)
    archive = "with" if manifest.archive else "without"
    return (
        f"{files} files {archive} the archive, {len(manifest.streams)} streams and buckets "
        f"({messages} messages and entries)"
    )
