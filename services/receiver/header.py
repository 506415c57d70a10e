"""Reading an object's identifying UIDs from the first bytes of its dataset, without pydicom.

Why: pydicom's dcmread of a header (file meta, element objects, value conversion) was about a
quarter of the receiver's CPU per object in bench/receiver_bench.py, and the receiver only needs
five values near the start of every dataset. This scanner handles the common case (little
endian, explicit or implicit VR, the five tags before any undefined-length sequence) and answers
None for anything else, in which case pydicom reads the file (see archive.read_identity).
"""

import struct
from dataclasses import dataclass

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
_NOT_EXPLICIT_LE = {IMPLICIT_VR_LE, "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}
_WANTED = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
_LAST = 0x0020000E
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
UNDEFINED = 0xFFFFFFFF
HEAD_BYTES = 16384  # how much of each dataset the receiver keeps for this scan


@dataclass(frozen=True)
class DatasetHead:
    """The first bytes of an encoded dataset (after the file meta) and its transfer syntax."""

    data: bytes
    transfer_syntax_uid: str


def scan_identity(head: DatasetHead) -> dict[str, str] | None:
    """The five identity values by keyword (absent ones missing), or None: ask pydicom."""
    if head.transfer_syntax_uid == IMPLICIT_VR_LE:
        explicit = False
    elif head.transfer_syntax_uid in _NOT_EXPLICIT_LE:
        return None  # deflated or big endian: rare, left to pydicom
    else:
        explicit = True
    buf, pos = head.data, 0
    found: dict[str, str] = {}
    while pos + 8 <= len(buf):
        group, element = struct.unpack_from("<HH", buf, pos)
        tag = group << 16 | element
        if tag > _LAST:
            return found
        header, length = _element_header(buf, pos, explicit)
        if header == 0 or length == UNDEFINED:
            return None  # not parseable here (odd VR, undefined-length sequence...)
        start = pos + header
        if start + length > len(buf):
            return None
        if tag in _WANTED:
            found[_WANTED[tag]] = (
                buf[start : start + length].decode("ascii", "replace").strip("\0 ")
            )
        pos = start + length
    return None


def _element_header(buf: bytes, pos: int, explicit: bool) -> tuple[int, int]:
    """(header size, value length) of the element at ``pos``; header 0 if it is not sane."""
    if not explicit:
        return 8, struct.unpack_from("<L", buf, pos + 4)[0]
    vr = buf[pos + 4 : pos + 6]
    if not vr.isalpha() or not vr.isupper():
        return 0, 0
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            return 0, 0
        return 12, struct.unpack_from("<L", buf, pos + 8)[0]
    return 8, struct.unpack_from("<H", buf, pos + 6)[0]
