"""The series summary (``site/raw/<Study>/<Series>.json``): the original's fields, per image.

Values are strings (``str`` of the pydicom value), as the original wrote them, so existing
admin scripts and rule files keep working. The first image of a series fills the fields; later
images update only what the original updated: the smallest SliceLocation, the latest MeasID,
``NumFiles`` (here: the exact count of distinct instances) and ``ClassifyType``.
"""

from collections.abc import Collection, Mapping
from typing import Any

from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from services.classifier import siemens

# Summary key -> where it comes from (a keyword, or a private tag read by number as the
# original did, whatever the private creator).
FIELDS: dict[str, str | BaseTag] = {
    "Manufacturer": "Manufacturer",
    "ManufacturerModelName": "ManufacturerModelName",
    "SoftwareVersion": "SoftwareVersions",
    "AcquisitionMatrix": "AcquisitionMatrix",
    "AcquisitionLength": Tag(0x0051, 0x100A),
    "Modality": "Modality",
    "StudyInstanceUID": "StudyInstanceUID",
    "SeriesInstanceUID": "SeriesInstanceUID",
    "SeriesTime": "SeriesTime",
    "StudyDate": "StudyDate",
    "StudyTime": "StudyTime",
    "PatientID": "PatientID",
    "PatientName": "PatientName",
    "PatientSex": "PatientSex",
    "InstitutionName": "InstitutionName",
    "SOPClassUID": "SOPClassUID",
    "StudyDescription": "StudyDescription",
    "StationName": "StationName",
    "SeriesDescription": "SeriesDescription",
    "OperatorsName": "OperatorsName",
    "StudyID": "StudyID",
    "SequenceName": "SequenceName",
    "ScanOptions": "ScanOptions",
    "EchoTime": "EchoTime",
    "RepetitionTime": "RepetitionTime",
    "SeriesNumber": "SeriesNumber",
    "InstanceNumber": "InstanceNumber",
    "SliceThickness": "SliceThickness",
    "ImageType": "ImageType",
    "SliceSpacing": "SpacingBetweenSlices",
    "Slices": Tag(0x0021, 0x104F),
    "ScanningSequence": "ScanningSequence",
    "SequenceVariant": "SequenceVariant",
    "SequenceType": Tag(0x2001, 0x1020),
    "PulseSequenceName": Tag(0x0019, 0x109C),
    "ActiveCoils": Tag(0x0051, 0x100F),
    "Private0019_105a": Tag(0x0019, 0x105A),
    "Private0019_10BB": Tag(0x0019, 0x10BB),
    "Private0043_1039": Tag(0x0043, 0x1039),
    "ImagesInAcquisition": "ImagesInAcquisition",
    "AccessionNumber": "AccessionNumber",
    "NumberOfTemporalPositions": "NumberOfTemporalPositions",
}
# Fields that identify a person: never in events or logs (hashed where needed).
IDENTIFYING = frozenset({"PatientID", "PatientName", "OperatorsName", "AccessionNumber"})


def dicom_string(value: Any) -> str:
    """A DICOM value as the original stored it: ``str()``, multi-values as a list's repr."""
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace").strip("\0 ")
    if isinstance(value, list | tuple | MultiValue):
        return str([_plain(v) for v in value])
    return str(value)


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | float) else str(value)


_FIELD_TAGS = {key: s if isinstance(s, BaseTag) else Tag(s) for key, s in FIELDS.items()}


def read_field(ds: Dataset, source: str | BaseTag) -> str | None:
    """One summary field from the dataset, or None when the element is absent or empty."""
    tag = source if isinstance(source, BaseTag) else Tag(source)
    if tag not in ds.keys():  # keys(): a plain dict lookup, where `in ds` converts the tag
        return None
    value = ds[tag].value
    if value is None or value == "" or value == b"":
        return None
    return dicom_string(value)


def fields_of(ds: Dataset, skip: Collection[str] = ()) -> dict[str, str]:
    """The summary fields this image provides (except those in ``skip``)."""
    found = {key: read_field(ds, tag) for key, tag in _FIELD_TAGS.items() if key not in skip}
    return {key: value for key, value in found.items() if value is not None}


def merge(
    previous: Mapping[str, Any] | None, ds: Dataset, connection: Mapping[str, str]
) -> dict[str, Any]:
    """The summary after one more image: first image wins, except the accumulating fields."""
    summary: dict[str, Any] = dict(previous) if previous else {}
    first_image = not summary
    summary.update(fields_of(ds, skip=summary))  # the first image that has a field wins
    if first_image:
        level = siemens.os_level(ds.get("SoftwareVersions"))
        summary.update({"OSLevel": level} if level else {})
        summary.update(siemens.series_fields(ds))  # the CSA level wins, as in the original
    _merge_siemens_image(summary, ds)
    if _unknown_sender(summary.get("IncomingConnection")):  # an image announced again from
        summary["IncomingConnection"] = dict(connection)  # the archive may have come first
    summary.setdefault("ClassifyType", [])
    location = _float(ds.get("SliceLocation"))
    if location is not None:
        known = _float(summary.get("SliceLocation"))
        summary["SliceLocation"] = str(location if known is None else min(known, location))
    return summary


def _merge_siemens_image(summary: dict[str, Any], ds: Dataset) -> None:
    """MeasID follows the latest image; each diffusion image adds its entry once."""
    measurement = siemens.series_fields(ds).get("MeasID") if summary.get("MeasID") else None
    if measurement:
        summary["MeasID"] = measurement
    fields = siemens.image_fields(ds)
    if "PhaseEncodingDirectionPositive" in fields:
        summary.setdefault(
            "PhaseEncodingDirectionPositive", fields["PhaseEncodingDirectionPositive"]
        )
    entry = fields.get("diffusion")
    if entry:
        others = [
            e
            for e in summary.get("siemensDiffusionInformation", [])
            if e.get("SOPInstanceUID") != entry["SOPInstanceUID"]
        ]
        summary["siemensDiffusionInformation"] = sorted(
            [*others, entry],
            key=lambda e: (_float(e.get("InstanceNumber")) or 0.0, e["SOPInstanceUID"]),
        )


def _float(value: Any) -> float | None:
    try:
        return float(value.value if hasattr(value, "value") else value)
    except (TypeError, ValueError):
        return None


def public_view(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary without what identifies a person (for events)."""
    return {k: v for k, v in summary.items() if k not in IDENTIFYING}


def _unknown_sender(connection: Any) -> bool:
    return not isinstance(connection, dict) or connection.get("AETitleCalled") in (None, "unknown")
