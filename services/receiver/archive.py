"""Putting a received object into ``site/archive`` durably, once.

An object is identified by its Study and SOP Instance UIDs (its archive path). It is linked into
place from the spool file (atomic: readers see no file or the whole file), then the file and
its directory are fsynced: only then is the C-STORE answered with Success. The same SOP
instance sent again is a duplicate and changes nothing; a *different* object under the same UID
is kept in quarantine, so nothing a sender sent is ever lost.
"""

import errno
import filecmp
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from fiona_common.errors import BadInput
from fiona_common.layout import FILE_MODE, Layout, checked_uid, fsync_file
from services.receiver.header import DatasetHead, scan_identity

# DCMTK's short modality names (dcmSOPClassUIDToModality), used as the archive file prefix
# ``<MOD>.<SOPInstanceUID>`` exactly as the original storescp wrote it.
_DCMTK_PREFIX = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "CTe",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "MRe",
    "1.2.840.10008.5.1.4.1.1.4.2": "MRs",
    "1.2.840.10008.5.1.4.1.1.4.3": "MRc",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
    "1.2.840.10008.5.1.4.1.1.7.1": "SCb",
    "1.2.840.10008.5.1.4.1.1.7.2": "SCg",
    "1.2.840.10008.5.1.4.1.1.7.3": "SCw",
    "1.2.840.10008.5.1.4.1.1.7.4": "SCc",
    "1.2.840.10008.5.1.4.1.1.11.1": "PSg",
    "1.2.840.10008.5.1.4.1.1.11.2": "PSc",
    "1.2.840.10008.5.1.4.1.1.11.3": "PSp",
    "1.2.840.10008.5.1.4.1.1.11.4": "PSb",
    "1.2.840.10008.5.1.4.1.1.88.11": "SRb",
    "1.2.840.10008.5.1.4.1.1.88.22": "SRe",
    "1.2.840.10008.5.1.4.1.1.88.33": "SRc",
    "1.2.840.10008.5.1.4.1.1.88.59": "KO",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.130": "PTe",
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
    "1.2.840.10008.5.1.4.1.1.3.1": "USm",
    "1.2.840.10008.5.1.4.1.1.20": "NM",
    "1.2.840.10008.5.1.4.1.1.66": "RAW",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.104.1": "DOC",
}
# What pydicom raises on damaged input. RecursionError: sequences nested a few hundred deep
# before the identifying UIDs (pydicom reads sequences recursively); without it such an object
# was answered "processing failure" and never quarantined.
_UNREADABLE = (
    InvalidDicomError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    OverflowError,
    struct.error,
    RecursionError,
    NotImplementedError,  # an unknown VR ("bad VR") in one of the identifying elements
)
_IDENTITY_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
]


@dataclass(frozen=True)
class ObjectIdentity:
    """What the archive and the event need to know about one object (no patient data)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str

    @property
    def file_prefix(self) -> str:
        prefix = _DCMTK_PREFIX.get(self.sop_class_uid) or self.modality
        return prefix if prefix.isalnum() and len(prefix) <= 16 else "UNKNOWN"


def read_identity(path: Path, head: DatasetHead | None = None) -> ObjectIdentity:
    """Read the identifying UIDs of a Part 10 file (never the pixel data).

    ``head`` (the dataset's first bytes, kept while receiving) is scanned first; pydicom reads
    the file when the scan cannot answer.

    Raises:
        BadInput: the file is not DICOM, or a UID is missing or invalid.
    """
    scanned = scan_identity(head) if head is not None else None
    values: dict[str, object]
    transfer_syntax: str | None
    if scanned is not None and head is not None:
        values, transfer_syntax = dict(scanned), head.transfer_syntax_uid
    else:
        values, transfer_syntax = _read_with_pydicom(path)
    return ObjectIdentity(
        study_uid=checked_uid(values.get("StudyInstanceUID"), "study_uid"),
        series_uid=checked_uid(values.get("SeriesInstanceUID"), "series_uid"),
        sop_uid=checked_uid(values.get("SOPInstanceUID"), "sop_uid"),
        sop_class_uid=checked_uid(values.get("SOPClassUID"), "sop_class_uid"),
        transfer_syntax_uid=checked_uid(transfer_syntax, "transfer_syntax_uid"),
        modality=str(values.get("Modality") or "OT").strip() or "OT",
    )


def _read_with_pydicom(path: Path) -> tuple[dict[str, object], str | None]:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_IDENTITY_TAGS)
        values = {tag: ds.get(tag) for tag in _IDENTITY_TAGS}
        syntax = ds.file_meta.get("TransferSyntaxUID")
        return values, str(syntax) if syntax is not None else None
    except _UNREADABLE as err:
        raise BadInput("not_dicom", f"not a readable DICOM file ({type(err).__name__})") from err


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"  # same UIDs, different bytes: the newcomer went to quarantine


@dataclass(frozen=True)
class StoredObject:
    outcome: StoreOutcome
    path: Path
    size_bytes: int


def store(
    layout: Layout, source: Path, identity: ObjectIdentity, fd: int | None = None
) -> StoredObject:
    """Put the complete Part 10 file ``source`` into the archive; ``source`` is left in place.

    ``fd``, an open descriptor of ``source``, saves opening it again to sync it.

    Raises:
        OSError: the disk refused (full, read-only...): nothing half-written stays behind.
    """
    target = layout.archive_file(identity.study_uid, identity.sop_uid, identity.file_prefix)
    try:
        try:
            _link_durably(source, target, layout.incoming_dir, fd)
        except FileNotFoundError:  # the study's first object: make its folder (rarely needed)
            target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            _link_durably(source, target, layout.incoming_dir, fd)
    except FileExistsError:
        same = filecmp.cmp(source, target, shallow=False)
        outcome = StoreOutcome.DUPLICATE if same else StoreOutcome.CONFLICT
        return StoredObject(outcome, target, target.stat().st_size)
    return StoredObject(StoreOutcome.STORED, target, target.stat().st_size)


def _link_durably(source: Path, target: Path, staging: Path, fd: int | None) -> None:
    """Hard-link ``source`` to ``target`` (never overwriting), then make both durable.

    One fsync of the file, *after* the link, covers the new name as well: the link changes the
    inode (its link count) in the same journal transaction as the directory entry, and ext4,
    XFS and btrfs all commit that transaction (or log the new name, and a parent folder created
    in the same transaction) when the inode is synced. A study folder made just before is thus
    covered too. An fsync of the folder would cost another device flush per object, which the
    benchmark showed to be ~40% of the time of a C-STORE.
    """
    if fd is None:
        os.chmod(source, FILE_MODE)  # spool files (with a descriptor) are created with it
    try:
        os.link(source, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        # The spool is on another file system (a SITES data dir elsewhere): copy, then link.
        tmp_fd, tmp = tempfile.mkstemp(prefix="copy-", dir=staging)
        os.close(tmp_fd)
        fd = None  # the archived copy is a different file from ``source``
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, FILE_MODE)
            os.link(tmp, target)
        finally:
            os.unlink(tmp)
    try:
        if fd is not None:
            os.fsync(fd)
        else:
            fsync_file(target)
    except OSError:
        os.unlink(target)  # not durable: do not leave a file that was never acknowledged
        raise
