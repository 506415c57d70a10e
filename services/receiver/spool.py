"""Spool files: where a C-STORE's dataset is written while it arrives.

Each dataset is streamed from the socket into a new Part 10 file in ``site/.incoming`` (on the
archive's file system, so the finished file is hard-linked into the archive without a copy),
which keeps memory flat whatever the object size. A failed write (full disk) does not raise
mid-transfer: the spool remembers it, the rest of the dataset is drained from the socket and
the C-STORE is answered "out of resources".
"""

import os
import struct
import uuid
from pathlib import Path

from fiona_common.layout import FILE_MODE
from fiona_common.upper_layer import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from services.receiver.header import HEAD_BYTES, DatasetHead

PREAMBLE = b"\0" * 128 + b"DICM"


def _meta_element(elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian element of group 0002."""
    if vr == b"OB":
        return struct.pack("<HH2s2xL", 2, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", 2, elem, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii", "replace")  # hostile bytes are refused later, by UID validation
    return raw + pad if len(raw) % 2 else raw


def encode_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_aet: str = "",
    receiving_aet: str = "",
) -> bytes:
    """The File Meta Information group (PS3.10 7.1), group length included.

    The association's AE titles go in too (Source and Receiving Application Entity Title): an
    object whose event was lost in a crash is announced again from the archive, and routing by
    called AE title needs them then (services/receiver/reconcile.py).
    """
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _padded(sop_class_uid, b"\0")),
            _meta_element(0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
            _meta_element(0x0010, b"UI", _padded(transfer_syntax_uid, b"\0")),
            _meta_element(0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\0")),
            _meta_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
        )
    )
    if source_aet:
        body += _meta_element(0x0016, b"AE", _padded(source_aet[:16], b" "))
    if receiving_aet:
        body += _meta_element(0x0018, b"AE", _padded(receiving_aet[:16], b" "))
    return _meta_element(0x0000, b"UL", struct.pack("<L", len(body))) + body


def remove_leftovers(directory: Path) -> int:
    """Delete spool files a previous run left behind: none of them was ever acknowledged."""
    removed = 0
    for path in directory.glob("*.dcm"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


class Spool:
    """One dataset being received into a temporary Part 10 file."""

    def __init__(self, directory: Path, file_meta: bytes, transfer_syntax_uid: str) -> None:
        self.error: OSError | None = None
        self.path: Path | None = None
        self.transfer_syntax_uid = transfer_syntax_uid
        self._head = bytearray()
        self._fd: int | None = None
        path = directory / f"rx-{uuid.uuid4().hex}.dcm"
        try:
            # Created with the archive's file mode: no chmod needed once it is linked there.
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            self.path = path
        except OSError as err:
            self.error = err
            return
        self._write(PREAMBLE + file_meta)

    @property
    def head(self) -> DatasetHead:
        """The first bytes of the dataset, for a header scan without re-reading the file."""
        return DatasetHead(bytes(self._head), self.transfer_syntax_uid)

    def write(self, data: bytes | memoryview) -> None:
        """Append dataset bytes as they arrive from the network."""
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self._write(data)

    def _write(self, data: bytes | memoryview) -> None:
        if self._fd is None or self.error is not None:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as err:
            self.error = err

    @property
    def fd(self) -> int | None:
        """The open descriptor of the spool file (None once closed or if it never opened)."""
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
