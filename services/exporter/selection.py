"""A study's stored objects, as the classifier indexed them (the archive is only read).

What a project does not receive (presentation states, secondary captures, burned-in text) is
decided per object by the de-identification engine with the project's policy.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiona_common.layout import Layout


@dataclass(frozen=True)
class StudyObject:
    series_uid: str
    sop_uid: str
    path: Path  # the archived file (never written to)
    sop_class_uid: str


def study_objects(layout: Layout, study_uid: str) -> list[StudyObject]:
    """The study's instances from ``site/raw/<Study>/<Series>/<SOP>`` (links into the archive)."""
    study_dir = layout.raw_dir / study_uid
    found = []
    for series_dir in (
        sorted(p for p in study_dir.iterdir() if p.is_dir()) if study_dir.is_dir() else []
    ):
        summary = _summary(study_dir / f"{series_dir.name}.json")
        sop_class = str(summary.get("SOPClassUID", ""))
        for link in sorted(series_dir.iterdir()):
            if link.name.startswith("."):
                continue
            found.append(StudyObject(series_dir.name, link.name, link.resolve(), sop_class))
    return found


def _summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
