"""C-FIND queries from the command line's ``KEY=VALUE`` words, and their answers as rows.

Pure: builds pydicom datasets and text, talks to nobody. Keys are DICOM keywords (any case);
``KEY=`` asks for the attribute without matching on it. Dates use DICOM range matching
(``20240101-20240131``, ``20240101-``, ``-20240131``). At study level ``Modality`` means
``ModalitiesInStudy`` (a study has no modality of its own).
"""

import re
from datetime import datetime
from enum import StrEnum
from functools import cache

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import DataElement

from fiona_common.errors import BadInput


class Level(StrEnum):
    STUDY = "study"
    SERIES = "series"
    IMAGE = "image"


# What each level shows when not asked for more: identifiers first, the long UIDs last.
DEFAULT_KEYS: dict[Level, list[str]] = {
    Level.STUDY: [
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyInstanceUID",
    ],
    Level.SERIES: [
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    ],
    Level.IMAGE: [
        "InstanceNumber",
        "SOPClassUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    ],
}

_DATE_RANGE = re.compile(r"^(?P<start>\d{8})?(?P<dash>-)?(?P<end>\d{8})?$")


@cache
def _keywords() -> dict[str, str]:
    return {k.lower(): k for k in keyword_dict}


def parse_keys(words: list[str], level: Level) -> dict[str, str]:
    """``["PatientID=X", "studydate=2024-"]`` -> ``{"PatientID": "X", ...}``, checked.

    Raises:
        BadInput: not ``KEY=VALUE``, an unknown keyword, or a malformed date.
    """
    keys: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            raise BadInput("bad_key", f"{word!r}: write KEY=VALUE (or KEY= to show KEY)")
        keyword = _keywords().get(name.strip().lower())
        if keyword is None:
            raise BadInput(
                "bad_key", f"{name!r} is not a DICOM keyword (e.g. PatientID, StudyDate)"
            )
        if level is Level.STUDY and keyword == "Modality":
            keyword = "ModalitiesInStudy"
        value = value.strip()
        if value and dictionary_VR(keyword) == "DA":
            check_date_range(keyword, value)
        keys[keyword] = value
    return keys


def check_date_range(keyword: str, value: str) -> None:
    """A DICOM date or date range with real dates; :class:`BadInput` otherwise."""
    match = _DATE_RANGE.match(value)
    if match is None or not (match["start"] or match["end"]):
        raise BadInput(
            "bad_date",
            f"{keyword}={value!r}: use YYYYMMDD, YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD",
        )
    for part in (match["start"], match["end"]):
        if part:
            try:
                datetime.strptime(part, "%Y%m%d")
            except ValueError:
                raise BadInput("bad_date", f"{keyword}={value!r}: {part} is no date") from None


def build_query(level: Level, keys: dict[str, str]) -> tuple[Dataset, list[str]]:
    """The identifier to send and the columns to show (defaults, then the ones asked for)."""
    columns = list(dict.fromkeys([*DEFAULT_KEYS[level], *keys]))
    query = Dataset()
    query.QueryRetrieveLevel = level.value.upper()
    for keyword in columns:
        setattr(query, keyword, keys.get(keyword, ""))
    return query, columns


def row_of(identifier: Dataset, columns: list[str]) -> dict[str, str]:
    """One answer as text per column ("" when the PACS left it out)."""
    return {
        keyword: text_of(identifier.data_element(keyword) if keyword in identifier else None)
        for keyword in columns
    }


def text_of(element: DataElement | None) -> str:
    if element is None or element.value is None:
        return ""
    value = element.value
    if element.VM > 1:
        return "\\".join(str(v) for v in value)
    return str(value)


def table(rows: list[dict[str, str]], columns: list[str]) -> list[str]:
    """Rows as aligned text lines under a header; a note when there are none."""
    if not rows:
        return ["(no matches)"]
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    for row in rows:
        lines.append("  ".join(row.get(c, "").ljust(widths[c]) for c in columns).rstrip())
    return lines
