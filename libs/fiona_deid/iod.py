"""Resolving Table E.1-1's combined actions (X/Z, Z/D, X/D, X/Z/D, X/Z/U*) for an object's IOD.

The standard picks the least-retaining action that keeps the object conformant: remove (X) unless
the IOD makes the attribute Type 2 (then Z, zero length) or Type 1 (then D, a dummy value; for
the reference sequences marked U*, keep them with their UIDs replaced).

The types come from ``iod_types.json``, generated from the PS3.3 module tables by
``scripts/make_iod_types.py`` (every SOP class of that edition of the standard). For a SOP class
it does not know (newer than the data), a short hand-copied list covers the IODs research
imaging produces. An attribute listed nowhere is treated as Type 3 (optional), so the first,
most removing letter applies, except for Z/D whose first letter is already the conformant
choice for Type 2 and 3.
"""

import json
from functools import lru_cache
from importlib.resources import files
from typing import Literal, cast

AttributeType = Literal["1", "2", "3"]

_ENHANCED_IMAGES = (
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image
)
# Enhanced images: Multi-frame Functional Groups (Content Date/Time Type 1), Enhanced General
# Equipment (Device Serial Number Type 1), Enhanced MR/CT Image (Acquisition DateTime Type 1C,
# required for ORIGINAL images), Acquisition Context (Type 2), Derivation Image (Source Image
# Sequence Type 1C inside a functional group).
_ENHANCED_TYPES: dict[int, AttributeType] = {
    0x00080023: "1",
    0x00080033: "1",
    0x0008002A: "1",
    0x00181000: "1",
    0x00400555: "2",
    0x00082112: "1",
}
_SR_TYPES: dict[int, AttributeType] = {0x00080023: "1", 0x00080033: "1"}  # SR Document General
# Presentation State Relationship: Referenced Series Sequence > Referenced Image Sequence Type 1;
# Presentation State Identification: Content Creator's Name Type 2.
_PR_TYPES: dict[int, AttributeType] = {0x00081140: "1", 0x00700084: "2"}
_RT_PLAN_TYPES: dict[int, AttributeType] = {0x300A0006: "2", 0x300A0007: "2", 0x300A00B2: "2"}
_RT_RECORD_TYPES: dict[int, AttributeType] = {0x30080250: "2", 0x30080251: "2", 0x300A00B2: "2"}


@lru_cache(maxsize=1)
def _generated() -> dict[tuple[str, bool], dict[int, AttributeType]]:
    raw = json.loads(files("fiona_deid").joinpath("iod_types.json").read_text())
    return {
        (sop, level == "nested"): {int(t, 16): cast(AttributeType, k) for t, k in types.items()}
        for sop, levels in raw["sop_classes"].items()
        for level, types in levels.items()
    }


def attribute_types(sop_class_uid: str, nested: bool = False) -> dict[int, AttributeType]:
    """Type 1 and 2 attributes among the combined-action rows, for one SOP class, at the top
    level of the object or (``nested``) inside its sequences."""
    generated = _generated().get((sop_class_uid, nested))
    if generated is not None:
        return generated
    return _hand_copied(sop_class_uid)


def _hand_copied(sop_class_uid: str) -> dict[int, AttributeType]:
    if sop_class_uid in _ENHANCED_IMAGES:
        return _ENHANCED_TYPES
    if sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.88."):
        return _SR_TYPES
    if sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.11."):
        return _PR_TYPES
    if sop_class_uid == "1.2.840.10008.5.1.4.1.1.481.5":
        return _RT_PLAN_TYPES
    if sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.481."):
        return _RT_RECORD_TYPES
    return {}


def resolve_combined(action: str, attribute_type: AttributeType) -> str:
    """One of X, Z, D, U for a combined action such as ``X/Z/D``."""
    letters = [a.rstrip("*") for a in action.split("/")]
    if len(letters) == 1:
        return letters[0]
    if attribute_type == "1":
        for wanted in ("D", "U", "Z"):
            if wanted in letters:
                return wanted
    if attribute_type == "2":
        for wanted in ("Z", "U", "D"):
            if wanted in letters:
                return wanted
    return letters[0]
