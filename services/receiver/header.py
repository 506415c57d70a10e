"""Reading an object's identifying UIDs from the first bytes of its dataset, without pydicom.

Why: pydicom's dcmread of a header (file meta, element objects, value conversion) was about a
quarter of the receiver's CPU per object in bench/receiver_bench.py, and the receiver only needs
five values near the start of every dataset. This scanner handles the common case (little
endian, explicit or implicit VR, the five tags before any undefined-length sequence) and answers
None for anything else, in which case pydicom reads the file (see archive.read_identity).
"""

import struct
from dataclasses import dataclass

from fiona_common.dicomfile import IMPLICIT_VR_LE, NOT_PLAIN_LE, UNDEFINED, element_header

_WANTED = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
_LAST = 0x0020000E
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
    elif head.transfer_syntax_uid in NOT_PLAIN_LE:
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
        header, _, length = element_header(buf, pos, explicit)
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
