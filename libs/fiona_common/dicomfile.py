"""Reading Part 10 files' file meta and header elements by hand, values left to pydicom.

Why not ``pydicom.dcmread(stop_before_pixels=True)``: its element generator and file-meta
checks cost about 0.5 ms per MR image header, which alone was a third of the classifier's CPU
per object and kept it under twice the receiver's objects per CPU-second (issue 3,
bench/classifier_bench.py); the exporter needs only the SOP and transfer syntax UIDs of files it
sends as they are. This module finds where each element's value lies (little endian, explicit
or implicit VR, sequences of defined or undefined length) and hands the raw values to a pydicom
``Dataset``, which converts them when they are read, exactly as after ``dcmread``. Anything
else (deflated or big endian files, a malformed element) is read by pydicom, which also gives
the error for damaged input.
"""

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.tag import BaseTag

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
# Deflated and big endian datasets: rare, left to pydicom.
NOT_PLAIN_LE = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"})
UNDEFINED = 0xFFFFFFFF
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Where pydicom's stop_before_pixels stops: Float, Double Float and Pixel Data.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_MAX_DEPTH = 32  # nested sequences; deeper ones go to pydicom
_CHUNK = 16384
_ELEMENT_HEAD = struct.Struct("<HH2sH").unpack_from  # tag, explicit VR, short value length
_U32 = struct.Struct("<L").unpack_from


@dataclass(frozen=True)
class FileMeta:
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    dataset_offset: int  # where the dataset starts: after the preamble, DICM and group 0002


def element_header(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes | None, int]:
    """(header size, VR, value length) of the element at ``pos``; header 0 if not sane.

    ``buf`` must hold at least 8 bytes from ``pos``. The VR is None in implicit VR.
    """
    if not explicit:
        return 8, None, struct.unpack_from("<L", buf, pos + 4)[0]
    vr = buf[pos + 4 : pos + 6]
    if not vr.isalpha() or not vr.isupper():
        return 0, None, 0
    if vr in LONG_VRS:
        if pos + 12 > len(buf):
            return 0, None, 0
        return 12, vr, struct.unpack_from("<L", buf, pos + 8)[0]
    return 8, vr, struct.unpack_from("<H", buf, pos + 6)[0]


def read_file_meta(source: Path | BinaryIO) -> FileMeta:
    """The file meta of a Part 10 file (group 0002 is always explicit VR little endian).

    Raises:
        ValueError: not a Part 10 file (no DICM prefix, truncated meta, no SOP class/UIDs).
    """
    if isinstance(source, Path):
        with open(source, "rb", buffering=0) as fp:
            return _file_meta(fp)[0]
    return _file_meta(source)[0]


def _file_meta(fp: BinaryIO) -> tuple[FileMeta, bytes]:
    """The file meta and the bytes read so far (the dataset's first bytes follow the meta)."""
    name = getattr(fp, "name", "file")
    head = fp.read(132 + 4096)
    if head[128:132] != b"DICM":
        raise ValueError(f"{name}: not a DICOM Part 10 file")
    values: dict[int, str] = {}
    offset = 132
    while True:
        if offset + 12 > len(head):
            head += fp.read(_CHUNK)
            if offset + 8 > len(head):
                break  # a file of file meta only: an empty dataset
        group, elem = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            break
        header, _, length = element_header(head, offset, explicit=True)
        if header == 0:
            raise ValueError(f"{name}: malformed file meta")
        start = offset + header
        while start + length > len(head):
            more = fp.read(_CHUNK)
            if not more:
                raise ValueError(f"{name}: truncated file meta")
            head += more
        if elem in (0x0002, 0x0003, 0x0010):
            values[elem] = head[start : start + length].decode("ascii", "replace").rstrip("\0 ")
        offset = start + length
    if not all(values.get(e) for e in (0x0002, 0x0003, 0x0010)):
        raise ValueError(f"{name}: file meta lacks the SOP class, instance or transfer syntax")
    return FileMeta(values[0x0002], values[0x0003], values[0x0010], offset), head


def read_header(path: Path) -> FileDataset:
    """The file up to its pixel data, like ``dcmread(path, stop_before_pixels=True)``."""
    return read_dataset(path, stop_before_pixels=True)


def read_dataset(path: Path, stop_before_pixels: bool = False) -> FileDataset:
    """The file as ``dcmread(path, stop_before_pixels=...)`` reads it, file meta included.

    Raises what ``dcmread`` raises for a file it cannot read (FileNotFoundError,
    InvalidDicomError, ...).
    """
    with open(path, "rb", buffering=0) as fp:  # reads are few and large: no buffer copy
        scanned = _scan_file(fp, stop_before_pixels)
    if scanned is None:
        return dcmread(path, stop_before_pixels=stop_before_pixels)
    preamble, meta, elements, explicit = scanned
    ds = FileDataset(str(path), elements, preamble, meta, not explicit, True)
    ds.set_original_encoding(not explicit, True, _character_set(ds))
    return ds


_Scanned = tuple[bytes, FileMetaDataset, dict[BaseTag, RawDataElement | DataElement], bool]


def _scan_file(fp: BinaryIO, stop_before_pixels: bool) -> _Scanned | None:
    """(preamble, file meta, the dataset's elements, explicit VR), or None: ask pydicom."""
    try:
        meta, head = _file_meta(fp)
    except ValueError:
        return None
    if meta.transfer_syntax in NOT_PLAIN_LE:
        return None
    meta_elements = _HeaderScan(None, head[132 : meta.dataset_offset], 132, True).elements(False)
    explicit = meta.transfer_syntax != IMPLICIT_VR_LE
    start = meta.dataset_offset
    elements = _HeaderScan(fp, head[start:], start, explicit).elements(stop_before_pixels)
    if meta_elements is None or elements is None:
        return None
    return head[:128], FileMetaDataset(meta_elements), elements, explicit


def _character_set(ds: Dataset) -> str | list[str]:
    charset: str | list[str] = ds._character_set  # what pydicom's reader records, too
    return charset


class _Unparseable(Exception):
    """The scan met something it does not handle; pydicom reads the file instead."""


class _HeaderScan:
    """Walks a dataset's elements in a buffer read from ``fp`` as far as it needs."""

    def __init__(self, fp: BinaryIO | None, first: bytes, file_offset: int, explicit: bool) -> None:
        """``first``: the bytes already read; ``fp`` (if any) is positioned after them."""
        self.fp, self.buf, self.file_offset, self.explicit = fp, first, file_offset, explicit

    def elements(
        self, stop_before_pixels: bool
    ) -> dict[BaseTag, RawDataElement | DataElement] | None:
        """The dataset's (top-level) elements, or None: ask pydicom."""
        elements: dict[BaseTag, RawDataElement | DataElement] = {}
        explicit, implicit, file_offset = self.explicit, not self.explicit, self.file_offset
        buf, pos = self.buf, 0
        try:
            # The common element (defined length, whole in the buffer) is parsed inline: this
            # loop runs for every element of every header the classifier reads.
            while True:
                if pos + 12 > len(buf):
                    self._has(pos + 12)
                    buf = self.buf
                    if pos + 8 > len(buf):
                        break
                group, number, vr, short_length = _ELEMENT_HEAD(buf, pos)
                tag = group << 16 | number
                if stop_before_pixels and tag in _PIXEL_TAGS:
                    break
                if not explicit:
                    vr, length, start = None, _U32(buf, pos + 4)[0], pos + 8
                elif vr in LONG_VRS:
                    length, start = _U32(buf, pos + 8)[0], pos + 12
                elif vr.isalpha() and vr.isupper():
                    length, start = short_length, pos + 8
                else:
                    return None
                if length == UNDEFINED:
                    _, vr, _, end, next_pos = self._element(pos, depth=0)
                    buf, vr, length = self.buf, b"SQ", end - start  # the items, no delimiter
                else:
                    end = next_pos = start + length
                    if end > len(buf):
                        if not self._has(end):
                            return None  # truncated: pydicom says how
                        buf = self.buf
                key = BaseTag(tag)
                elements[key] = RawDataElement(
                    key,
                    vr.decode() if vr is not None else None,
                    length,
                    buf[start:end],
                    file_offset + start,
                    implicit,
                    True,
                )
                pos = next_pos
        except (_Unparseable, struct.error):
            return None
        if pos + 8 > len(buf) and pos != len(buf):
            return None  # trailing bytes: pydicom's case
        return elements

    def _has(self, end: int) -> bool:
        """Whether ``buf`` holds ``end`` bytes, reading more of the file if needed."""
        while len(self.buf) < end:
            if self.fp is None:
                return False
            more = self.fp.read(max(_CHUNK, end - len(self.buf)))
            if not more:
                return False
            self.buf += more
        return True

    def _element(self, pos: int, depth: int) -> tuple[int, bytes | None, int, int, int]:
        """(header size, VR, length, value end, next element) of the element at ``pos``."""
        self._has(pos + 12)  # a short VR's header is 8 bytes: element_header checks the rest
        header, vr, length = element_header(self.buf, pos, self.explicit)
        if header == 0:
            raise _Unparseable
        start = pos + header
        if length != UNDEFINED:
            if not self._has(start + length):
                raise _Unparseable  # truncated: pydicom says how
            return header, vr, length, start + length, start + length
        if vr not in (None, b"SQ"):
            raise _Unparseable  # undefined-length UN or encapsulated data: pydicom's case
        value_end, next_pos = self._sequence_end(start, depth + 1)
        return header, vr, length, value_end, next_pos

    def _sequence_end(self, pos: int, depth: int) -> tuple[int, int]:
        """Where an undefined-length sequence's items end, and the position after its delimiter."""
        if depth > _MAX_DEPTH:
            raise _Unparseable
        while True:
            if not self._has(pos + 8):
                raise _Unparseable
            group, number, length = struct.unpack_from("<HHL", self.buf, pos)
            tag = group << 16 | number
            if tag == _SEQUENCE_END:
                return pos, pos + 8
            if tag != _ITEM:
                raise _Unparseable
            if length != UNDEFINED:
                pos += 8 + length
            else:
                pos = self._item_end(pos + 8, depth)

    def _item_end(self, pos: int, depth: int) -> int:
        """The position after an undefined-length item's delimiter."""
        while True:
            if not self._has(pos + 8):
                raise _Unparseable
            group, number = struct.unpack_from("<HH", self.buf, pos)
            if group << 16 | number == _ITEM_END:
                return pos + 8
            pos = self._element(pos, depth)[4]
