"""Reading objects from and writing them to disk around the pure engine."""

import struct
from collections.abc import Iterator
from pathlib import Path

from pydicom.errors import InvalidDicomError

from fiona_common.dicomfile import read_dataset
from fiona_common.layout import safe_component, write_atomic
from fiona_deid.engine import deidentify
from fiona_deid.records import DeidResult, Outcome
from fiona_deid.settings import DeidSettings


def deidentify_file(
    in_path: Path,
    out_dir: Path,
    settings: DeidSettings,
    key: bytes,
    subject: str,
    event: str = "",
    durable: bool = True,
) -> tuple[DeidResult, Path | None]:
    """De-identify one file into ``out_dir/<series UID>/<modality>.<SOP UID>.dcm``.

    Returns the result and the written path (None unless emitted). An unreadable input is
    quarantined, with the pydicom error as the reason. ``durable=False`` skips the fsyncs, for
    output that is made again after a crash.
    """
    try:
        ds = read_dataset(in_path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        return DeidResult(Outcome.QUARANTINED, f"not readable as DICOM: {err}"), None
    try:
        result = deidentify(ds, settings, key, subject, event)
    except (ValueError, TypeError, KeyError, OverflowError, struct.error) as err:
        # a malformed element pydicom cannot decode; the message may quote values: not kept
        return DeidResult(Outcome.QUARANTINED, f"malformed object ({type(err).__name__})"), None
    if result.outcome is not Outcome.EMITTED or result.encoded is None:
        return result, None
    out = result.dataset
    assert out is not None
    modality = safe_component(str(out.get("Modality", "") or "OT"))
    series = safe_component(str(out.get("SeriesInstanceUID", "") or "no-series"))
    path = out_dir / series / f"{modality}.{out.SOPInstanceUID}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, result.encoded, durable=durable)
    return result, path


def input_files(path: Path) -> Iterator[Path]:
    """``path`` itself, or every regular file below it in name order."""
    if path.is_file():
        yield path
        return
    for child in sorted(path.rglob("*")):
        if child.is_file():
            yield child
