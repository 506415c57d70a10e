"""Delivery into ``outbox/<project>/<participant>/<event>/<StudyInstanceUID>/``.

A study appears at once: its files are written into a private folder under ``outbox/.incoming``
and the folder is renamed into place (same file system: atomic). A resend of a reopened study
writes the complete, merged study again the same way and swaps it in. With ``archive`` the study
is also one ``.zip`` next to the folder, with a ``.sha256`` checksum file written after it; the
same files give the same archive, byte for byte (an interrupted upload of it can be continued).

An SFTP destination uploads from the outbox; once every SFTP destination of the project has
confirmed a study, it moves on to ``<DATADIR>/sent/`` (the original's DAIC folder) unless an
outbox destination keeps it, with ``<study>.receipt.json`` saying who confirmed what.
"""

import hashlib
import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

from fiona_common.layout import (
    DIR_MODE,
    FILE_MODE,
    fsync_dir,
    fsync_file,
    safe_component,
    write_atomic,
)

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that the archive depends on the files only


def study_dir(outbox: Path, project: str, participant: str, event: str, study_uid: str) -> Path:
    parts = (project, participant, event or "_", study_uid)
    return outbox.joinpath(*(safe_component(p) for p in parts))


def publish_study(files: list[Path], target: Path, outbox: Path, archive: bool) -> None:
    """Put ``files`` (and those of an earlier delivery to ``target``) into ``target`` atomically."""
    staging = outbox / ".incoming" / uuid.uuid4().hex
    staging.mkdir(mode=DIR_MODE, parents=True)
    try:
        if target.is_dir():  # a resend: keep what the earlier delivery brought
            for old in target.iterdir():
                os.link(old, staging / old.name)
        for f in files:
            dest = staging / f.name
            dest.unlink(missing_ok=True)
            shutil.copyfile(f, dest)
            os.chmod(dest, FILE_MODE)
            fsync_file(dest)  # the ledger records these as delivered: on disk first
        fsync_dir(staging)
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        previous = None
        if target.exists():
            previous = outbox / ".incoming" / f"old-{uuid.uuid4().hex}"
            os.rename(target, previous)
        os.rename(staging, target)
        fsync_dir(target.parent)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if archive:
        write_archive(target)


def write_archive(folder: Path) -> Path:
    """``<folder>.zip`` (atomically) and ``<folder>.zip.sha256``; returns the archive's path."""
    zip_path = folder.with_name(folder.name + ".zip")
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            info = zipfile.ZipInfo(f"{folder.name}/{f.name}", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100000 | FILE_MODE) << 16
            with f.open("rb") as src, z.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(tmp, FILE_MODE)
    fsync_file(tmp)
    os.replace(tmp, zip_path)
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    checksum = zip_path.with_name(zip_path.name + ".sha256")
    checksum.write_text(f"{digest}  {zip_path.name}\n")
    os.chmod(checksum, FILE_MODE)
    fsync_file(checksum)
    fsync_dir(folder.parent)
    return zip_path


def sent_dir(outbox: Path) -> Path:
    """Where confirmed uploads go: ``<DATADIR>/sent`` next to ``<DATADIR>/outbox``."""
    return outbox.parent / "sent"


def publish_package(files: list[Path], target: Path, outbox: Path, archive: bool) -> None:
    """:func:`publish_study` for an upload: a study sent before (moved on to ``sent/``) is
    packed again with its earlier files, so the server receives the whole study again."""
    earlier = sent_dir(outbox) / target.relative_to(outbox)
    before = []
    if earlier.is_dir() and not target.is_dir():
        before = sorted(p for p in earlier.iterdir() if p.is_file())
    publish_study([*before, *files], target, outbox, archive)


def file_receipt(
    target: Path, outbox: Path, uploader: str, receipt: dict[str, Any], waiting: set[str]
) -> bool:
    """Note ``uploader``'s confirmation of ``receipt["sha256"]`` in ``sent/<study>.receipt.json``
    and move the study's package there once none of ``waiting`` (the uploaders that must also
    confirm it; an outbox destination is one that never does) lacks it. Moved or not."""
    sent = sent_dir(outbox) / target.relative_to(outbox)
    sent.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path = sent.with_name(sent.name + ".receipt.json")
    try:
        filed = json.loads(path.read_text())
    except (OSError, ValueError):
        filed = {}
    confirmed = {**filed.get("confirmed", {}), uploader: receipt}
    write_atomic(
        path, json.dumps({"study": target.name, "confirmed": confirmed}, indent=1).encode()
    )
    digest = receipt["sha256"]
    if any(confirmed.get(u, {}).get("sha256") != digest for u in waiting - {uploader}):
        return False
    for name in (target.name, target.name + ".zip", target.name + ".zip.sha256"):
        _move(target.with_name(name), sent.with_name(name))
    fsync_dir(sent.parent)
    return True


def _move(source: Path, dest: Path) -> None:
    """Rename ``source`` over ``dest`` (a folder there is replaced as a whole)."""
    if not source.exists():
        return
    if source.is_dir() and dest.is_dir():
        aside = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.old")
        os.rename(dest, aside)
        os.rename(source, dest)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(source, dest)
