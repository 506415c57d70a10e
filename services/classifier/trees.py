"""The trees admins and tools browse: ``site/raw``, ``site/participants``, ``site/srs``.

All links are relative (the data directory can be moved or mounted elsewhere) and created
idempotently: an existing correct link is left alone, a wrong one is replaced atomically.
PatientID, dates and Manufacturer come from the sender, so they are made safe before they
become path components, like UIDs are in ``fiona_common.layout``.
"""

import contextlib
import functools
import os
import re
import uuid
from pathlib import Path

from fiona_common.layout import DIR_MODE, Layout, safe_component

_DATE_TIME = re.compile(r"[0-9.]{1,26}")
UNKNOWN_DATE_TIME = "unknown_unknown"  # the original's name when StudyDate/StudyTime are missing


def study_link_name(study_date: str | None, study_time: str | None) -> str:
    """``<StudyDate>_<StudyTime>`` as the original named participant links."""
    if study_date and study_time and _DATE_TIME.fullmatch(study_date + study_time):
        return f"{study_date}_{study_time}"
    return UNKNOWN_DATE_TIME


def ensure_link(link: Path, target: Path) -> bool:
    """Make ``link`` a relative symlink to ``target``; True if it had to be created or fixed."""
    folder = _relative_dir(str(target.parent), str(link.parent))
    relative = target.name if folder == os.curdir else os.path.join(folder, target.name)
    # The common case, a new link, costs one system call; the others are checked after.
    try:
        os.symlink(relative, link)
        return True
    except FileNotFoundError:
        link.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except FileExistsError:
        with contextlib.suppress(OSError):  # not a link: replaced below
            if os.readlink(link) == relative:
                return False
    # Another replica may create or fix the same link at the same moment: a private name
    # renamed over the link is atomic, and the last writer's link is as good as the first's.
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.symlink(relative, tmp)
    os.replace(tmp, link)
    return True


@functools.lru_cache(maxsize=4096)
def _relative_dir(target_dir: str, link_dir: str) -> str:
    # Cached: every image of a series links from the same folder into the same folder, and
    # relpath (two abspath + normpath) cost as much as the rest of the link's Python code.
    return os.path.relpath(target_dir, link_dir)


def series_dir(layout: Layout, study_uid: str, series_uid: str) -> Path:
    return layout.raw_dir / study_uid / series_uid


def link_instance(
    layout: Layout, archive_file: Path, study_uid: str, series_uid: str, sop_uid: str
) -> Path:
    """``raw/<Study>/<Series>/<SOP>`` -> the archived file; returns the link."""
    link = series_dir(layout, study_uid, series_uid) / sop_uid
    ensure_link(link, archive_file)
    return link


def link_participant(layout: Layout, patient_id: str, link_name: str, study_uid: str) -> None:
    """``participants/<PatientID>/<StudyDate>_<StudyTime>`` -> ``raw/<Study>``."""
    folder = layout.participants_dir / safe_component(patient_id)
    ensure_link(folder / link_name, layout.raw_dir / study_uid)


def link_structured_report(
    layout: Layout, manufacturer: str, study_uid: str, sop_uid: str, archive_file: Path
) -> None:
    """``srs/<Manufacturer>/<Study>/<SOP>`` for report extractors."""
    link = layout.srs_dir / safe_component(manufacturer) / study_uid / sop_uid
    ensure_link(link, archive_file)


def count_instances(layout: Layout, study_uid: str, series_uid: str) -> int:
    """How many distinct instances the series has: its links in ``raw/``."""
    with os.scandir(series_dir(layout, study_uid, series_uid)) as entries:
        return sum(1 for e in entries if not e.name.startswith("."))
