"""Delivery into ``outbox/<project>/<participant>/<event>/<StudyInstanceUID>/``.

A study appears at once: its files are written into a private folder under ``outbox/.incoming``
and the folder is renamed into place (same file system: atomic). A resend of a reopened study
writes the complete, merged study again the same way and swaps it in. With ``archive`` the study
is also one ``.zip`` next to the folder, with a ``.sha256`` checksum file written after it.
"""

import hashlib
import os
import shutil
import uuid
import zipfile
from pathlib import Path

from fiona_common.layout import DIR_MODE, FILE_MODE, fsync_dir, safe_component


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
            z.write(f, arcname=f"{folder.name}/{f.name}")
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, zip_path)
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    checksum = zip_path.with_name(zip_path.name + ".sha256")
    checksum.write_text(f"{digest}  {zip_path.name}\n")
    os.chmod(checksum, FILE_MODE)
    fsync_dir(folder.parent)
    return zip_path
