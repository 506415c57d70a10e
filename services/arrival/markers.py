"""The original's arrival files in ``site/.arrived/``, for admins' scripts (spec 6.1).

``<caller> <called> <ip> <StudyUID> <SeriesUID>`` per series and ``<caller> <called> <ip>
scp_<StudyUID>`` per study, touched while objects arrive (their mtime is the last arrival) and
removed once the study is complete. AE titles and addresses come from the sender, so they are
made safe before they become part of a file name.
"""

import contextlib
import os
from pathlib import Path

from fiona_common.layout import DIR_MODE, FILE_MODE, Layout, safe_component
from services.arrival.progress import StudyProgress


def marker_names(study: StudyProgress) -> set[str]:
    names = set()
    for uid, series in study.series.items():
        who = " ".join(
            safe_component(x or "unknown")
            for x in (series.calling_aet, series.called_aet, series.peer_address)
        )
        names.add(f"{who} {study.study_uid} {uid}")
        names.add(f"{who} scp_{study.study_uid}")
    return names


def touch_markers(layout: Layout, study: StudyProgress) -> None:
    layout.arrived_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for name in marker_names(study):
        path = layout.arrived_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        os.close(fd)
        os.utime(path)


def remove_markers(layout: Layout, study: StudyProgress) -> None:
    for name in marker_names(study):
        with contextlib.suppress(FileNotFoundError):
            Path(layout.arrived_dir / name).unlink()
