"""``fiona classify PATH...``: classify files or folders without NATS, the admin's rule tester."""

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from services.classifier.rules import Classification, RuleSet, classify_image
from services.classifier.summary import merge


@dataclass
class SeriesResult:
    """What the rules made of one series, and why (the last image's trace)."""

    series_uid: str
    description: str = ""
    files: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    last: Classification | None = None
    failed: frozenset[str] = frozenset()


def dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every file under ``paths`` (files as given, folders recursively, sorted)."""
    for path in paths:
        if path.is_dir():
            for root, _dirs, files in sorted(os.walk(path)):
                yield from (Path(root) / name for name in sorted(files))
        elif path.is_file():
            yield path


def classify_paths(rules: RuleSet, paths: Iterable[Path]) -> tuple[list[SeriesResult], int]:
    """Series in the order first seen, and how many files were not readable DICOM."""
    series: dict[str, SeriesResult] = {}
    skipped = 0
    for path in dicom_files(paths):
        try:
            ds = dcmread(path, stop_before_pixels=True)
            uid = str(ds.SeriesInstanceUID)
        except (InvalidDicomError, AttributeError, EOFError, ValueError, OSError):
            skipped += 1
            continue
        result = series.setdefault(uid, SeriesResult(uid, str(ds.get("SeriesDescription", ""))))
        result.files += 1
        result.summary = merge(result.summary, ds, {"AETitleCaller": "offline"})
        result.summary["NumFiles"] = str(result.files)
        result.last = classify_image(
            rules, ds, result.summary, result.summary.get("ClassifyType", []), result.failed
        )
        result.summary["ClassifyType"] = list(result.last.types)
        result.failed = frozenset(result.last.series_level_failed)
    return list(series.values()), skipped


def report(results: list[SeriesResult], explain: bool) -> list[str]:
    """Printable lines: one per series, plus the rule trace with ``explain``."""
    lines = []
    for result in results:
        types = ", ".join(result.summary.get("ClassifyType", [])) or "(no type)"
        lines.append(
            f"{result.series_uid}  {result.files:>5} files  {result.description!r}: {types}"
        )
        if explain and result.last is not None:
            lines.extend(f"    {_explain(trace)}" for trace in result.last.trace)
    return lines


def _explain(trace: Any) -> str:
    label = f"{trace.type}" + (f" ({trace.id})" if getattr(trace, "id", None) else "")
    if trace.matched:
        return f"MATCH   {label}"
    reason = getattr(trace, "failed", None) or getattr(trace, "reason", "")
    return f"no      {label}: {reason}"
