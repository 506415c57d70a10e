"""Reading and writing the ASCII-only values the rules change most (UIDs, dates, IDs).

pydicom decodes a raw element into a DataElement and validates every value set; for the
elements whose VR is ASCII by definition (UI, DA, DT, TM, AS, CS, DS, IS) neither is needed:
their bytes are the value. Values written here become raw elements again, which the encoder
writes without a second pass through pydicom. On the benchmark corpus this halved the rule
pass. Text VRs (LO, PN, ...) depend on the character set and go through pydicom.
"""

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

ASCII_VRS = frozenset({"UI", "DA", "DT", "TM", "AS", "CS", "DS", "IS", "AE"})


def ascii_values(ds: Dataset, tag: int) -> list[str]:
    """The values of an ASCII-VR element, without decoding it through pydicom."""
    element = ds.get_item(tag)
    value = element.value if element is not None else None
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace").strip("\0 ")
        return [v.strip("\0 ") for v in text.split("\\")] if text else []
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def put_ascii(ds: Dataset, tag: int, vr: str, values: list[str]) -> None:
    """Replace the element by a raw one holding ``values`` (padded to even length)."""
    data = "\\".join(values).encode("ascii", "replace")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    _put_raw(ds, tag, vr, data)


def put_empty(ds: Dataset, tag: int, vr: str) -> None:
    """Zero length (action Z); an empty sequence for SQ."""
    _put_raw(ds, tag, vr, b"")


def _put_raw(ds: Dataset, tag: int, vr: str, data: bytes) -> None:
    old = ds.get_item(tag)
    implicit, little = _encoding_of(ds, old)
    ds[tag] = RawDataElement(tag, vr, len(data), data, 0, implicit, little, True, False)  # type: ignore[arg-type]


def _encoding_of(ds: Dataset, old: DataElement | RawDataElement | None) -> tuple[bool, bool]:
    if isinstance(old, RawDataElement):
        return old.is_implicit_VR, old.is_little_endian
    implicit, little = ds.original_encoding
    return bool(implicit), little is not False
