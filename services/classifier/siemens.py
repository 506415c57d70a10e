"""Fields the original took from Siemens CSA headers (spec 2.3), read with nibabel's parsers.

Image header: PhaseEncodingDirectionPositive and the diffusion values of each image. Series
header, its ``MrPhoenixProtocol`` "ASCCONV" part: siemensUUID (``sWipMemBlock.tFree``),
NumSlices (``sGroupArray.asGroup[0].nSize``), MeasID (``lSequenceID``) and the software level
(``sProtConsistencyInfo.t[Measured]BaselineString``, ``N4_<level>``). Anything unreadable is
left out, as the original did: a vendor header never stops indexing.
"""

import re
import warnings
from typing import Any

from pydicom import Dataset
from pydicom.multival import MultiValue

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # nibabel warns about its experimental DICOM readers
    from nibabel.nicom import ascconv, csareader

_ASCCONV = re.compile(r"### ASCCONV BEGIN.*?### ASCCONV END ###", re.S)
_RELEASE = re.compile(r"release:([^\s\\]+)")


def os_level(software_versions: object) -> str | None:
    """``release:<x>`` in SoftwareVersions (GE), as the original's OSLevel."""
    if isinstance(software_versions, list | tuple | MultiValue):
        software_versions = "\\".join(str(v) for v in software_versions)
    found = _RELEASE.search(str(software_versions or ""))
    return found.group(1) if found else None


def series_fields(ds: Dataset) -> dict[str, str]:
    """Summary fields from the CSA series header (empty for non-Siemens objects)."""
    protocol = _protocol(ds)
    if not protocol:
        return {}
    fields: dict[str, Any] = {
        "siemensUUID": _path(protocol, "sWipMemBlock", "tFree"),
        "NumSlices": _path(protocol, "sGroupArray", "asGroup", 0, "nSize"),
        "MeasID": protocol.get("lSequenceID"),
    }
    consistency = protocol.get("sProtConsistencyInfo") or {}
    baseline = consistency.get("tMeasuredBaselineString") or consistency.get("tBaselineString")
    if isinstance(baseline, str) and baseline.startswith("N4_"):
        fields["OSLevel"] = baseline[3:]
    return {key: str(value) for key, value in fields.items() if value not in (None, "")}


def image_fields(ds: Dataset) -> dict[str, Any]:
    """PhaseEncodingDirectionPositive and, for diffusion images, their diffusion entry."""
    header = _csa(ds, "image")
    if not header:
        return {}
    fields: dict[str, Any] = {}
    phase = _scalar(header, "PhaseEncodingDirectionPositive")
    if phase is not None:
        fields["PhaseEncodingDirectionPositive"] = str(phase)
    directionality = _scalar(header, "DiffusionDirectionality")
    if directionality:
        vector = _vector(header, "DiffusionGradientDirection")
        fields["diffusion"] = {
            "B_value": str(_scalar(header, "B_value")),
            "SOPInstanceUID": str(ds.get("SOPInstanceUID", "")),
            "InstanceNumber": str(ds.get("InstanceNumber", "")),
            "DiffusionDirectionality": str(directionality),
            "DiffusionGradientDirection": [] if vector is None else [float(v) for v in vector],
        }
    return fields


def _protocol(ds: Dataset) -> dict[str, Any] | None:
    header = _csa(ds, "series")
    text = _scalar(header, "MrPhoenixProtocol") if header else None
    found = _ASCCONV.search(text) if isinstance(text, str) else None
    if found is None:
        return None
    try:
        protocol, _attrs = ascconv.parse_ascconv(found.group(0), str_delim='""')
    except (ascconv.AscconvParseError, ValueError, SyntaxError, TypeError):
        return None
    return dict(protocol)


def _csa(ds: Dataset, kind: str) -> dict[str, Any] | None:
    try:
        header: dict[str, Any] | None = csareader.get_csa_header(ds, kind)
        return header
    except (csareader.CSAReadError, ValueError, KeyError, TypeError, IndexError):
        return None


def _scalar(header: dict[str, Any], name: str) -> Any:
    try:
        return csareader.get_scalar(header, name)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _vector(header: dict[str, Any], name: str) -> Any:
    try:
        return csareader.get_vector(header, name, 3)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _path(tree: Any, *keys: str | int) -> Any:
    for key in keys:
        try:
            tree = tree[key]
        except (KeyError, IndexError, TypeError):
            return None
    return tree
