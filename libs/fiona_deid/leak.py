"""The leak guard: does an output object still carry an identifying value of its input?

Checked against the encoded output (every element, inside sequences and private data, binary
values included, pixel data excluded), case-insensitively. The fast check searches the encoded
header bytes once per needle (C speed); only when something is found does :func:`leak_check`
walk the elements to say where. Reports name the kind of identifier and the tag, never a value.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

# Identifying attributes of the input whose values must not reach the output, with the kind of
# identifier a report names. Names are also checked by component (family, given, ...).
IDENTIFYING = {
    0x00100010: "patient name",
    0x00100020: "patient ID",
    0x00101000: "other patient IDs",
    0x00101001: "other patient names",
    0x00101005: "patient birth name",
    0x00101060: "patient mother's birth name",
    0x00100030: "birth date",
    0x00080050: "accession number",
    0x00101040: "patient address",
    0x00102154: "patient telephone",
    0x00101090: "medical record locator",
    0x00080090: "referring physician",
    0x00081050: "performing physician",
    0x00081070: "operator",
    0x00321032: "requesting physician",
}
_NAME_VRS = {"PN"}
# What the engine itself writes from a fixed vocabulary (method text, CID 7050 code meanings):
# "Retain Patient Characteristics" is no leak of a patient called Patient.
ENGINE_WRITTEN = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})
MIN_COMPONENT_LENGTH = 4  # shorter name parts ("Li", "Ann") match too much unrelated text
MIN_VALUE_LENGTH = 3


@dataclass
class Identifiers:
    """Identifying values of one input object, as lower-case needles → kind."""

    needles: dict[bytes, str] = field(default_factory=dict)
    name_parts: set[str] = field(default_factory=set)  # for scrubbing text, word-bounded

    def add(self, value: str, kind: str, min_length: int = MIN_VALUE_LENGTH) -> None:
        text = value.strip().lower()
        if len(text) >= min_length:
            for encoding in ("utf-8", "latin-1"):
                try:
                    self.needles.setdefault(text.encode(encoding), kind)
                except UnicodeEncodeError:
                    continue

    def add_uid(self, uid: str) -> None:
        self.add(uid, "original UID")

    def add_date(self, value: str) -> None:
        self.add(value[:8], "original date", min_length=8)

    def discard(self, values: Iterable[str]) -> None:
        """Forget values that are meant to be in the output (a participant ID equal to the old
        patient ID when a trusted sender already pseudonymized, the project name, ...)."""
        for value in values:
            self.needles.pop(value.strip().lower().encode("utf-8", "replace"), None)

    def texts(self) -> list[str]:
        """Names, name parts and IDs (not UIDs or dates), for scrubbing free text."""
        kinds = {"original UID", "original date"}
        words = {n.decode("utf-8", "replace") for n, k in self.needles.items() if k not in kinds}
        return sorted(words | self.name_parts, key=len, reverse=True)


def identifiers_of(ds: Dataset) -> Identifiers:
    """The identifying values of an input object's top level (before it is changed)."""
    found = Identifiers()
    for tag, kind in IDENTIFYING.items():
        if tag not in ds:
            continue
        element = ds[tag]
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            if value is None or value == "":
                continue
            found.add(str(value), kind)
            if element.VR in _NAME_VRS:
                for part in PersonName(value).components[0].split("^"):
                    found.add(part, kind, MIN_COMPONENT_LENGTH)
                    if len(part.strip()) >= 2:
                        found.name_parts.add(part.strip().lower())
    return found


def find_in_bytes(data: bytes, identifiers: Identifiers) -> list[str]:
    """Kinds of identifier found anywhere in ``data`` (the fast check)."""
    lowered = data.lower()
    return sorted({kind for needle, kind in identifiers.needles.items() if needle in lowered})


def leak_check(output: Dataset, identifiers: Identifiers) -> list[str]:
    """Where identifiers appear in ``output``: ``"patient name in (0029,1010)"`` per finding."""
    findings: list[str] = []
    for path, data in _element_bytes(output, ""):
        lowered = data.lower()
        for needle, kind in identifiers.needles.items():
            if needle in lowered:
                findings.append(f"{kind} in {path}")
    return sorted(set(findings))


def _element_bytes(ds: Dataset, prefix: str) -> Iterator[tuple[str, bytes]]:
    for tag in list(ds.keys()):
        if tag == 0x7FE00010:
            continue  # pixel data: identifying pixels are the burned-in policy's business
        if not prefix and tag in ENGINE_WRITTEN:
            continue
        element = ds.get_item(tag)
        here = f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if isinstance(element, RawDataElement) and element.VR != "SQ":
            if element.value:
                yield here, bytes(element.value)
            continue
        element = ds[tag]
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                yield from _element_bytes(item, f"{here}[{index}]>")
        else:
            yield here, _as_bytes(element)


def _as_bytes(element: DataElement) -> bytes:
    value = element.value
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if value is None:
        return b""
    if element.VM > 1:
        return "\\".join(str(v) for v in value).encode("utf-8", "replace")
    return str(value).encode("utf-8", "replace")
