"""De-identified copies of a study's objects in the staging area (the archive is only read)."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from fiona_common.layout import Layout
from fiona_common.quarantine import quarantine
from fiona_deid.files import deidentify_file
from fiona_deid.records import Outcome
from fiona_deid.settings import DeidSettings
from services.exporter.ledger import source_hash
from services.exporter.selection import StudyObject

log = logging.getLogger(__name__)


@dataclass
class Staged:
    files: dict[str, Path] = field(default_factory=dict)  # source hash -> de-identified file
    dest_sop: dict[str, str] = field(default_factory=dict)  # source hash -> new SOP UID
    held: dict[str, str] = field(default_factory=dict)  # source hash -> why it is not sent
    mapped_study_uid: str = ""

    def add(self, other: "Staged") -> None:
        self.files.update(other.files)
        self.dest_sop.update(other.dest_sop)
        self.held.update(other.held)
        self.mapped_study_uid = self.mapped_study_uid or other.mapped_study_uid


def stage(
    objects: list[StudyObject],
    out_dir: Path,
    settings: DeidSettings,
    key: bytes,
    participant: str,
    event: str,
    layout: Layout | None = None,
) -> Staged:
    """De-identify ``objects`` into ``out_dir``."""
    staged = Staged()
    for obj in objects:
        source = source_hash(obj.sop_uid)
        # Not fsynced: staging is scratch, and a request interrupted by a crash stages again.
        result, path = deidentify_file(
            obj.path, out_dir, settings, key, participant, event, durable=False
        )
        if result.outcome is Outcome.EMITTED and path is not None and result.dataset is not None:
            staged.files[source] = path
            staged.dest_sop[source] = str(result.dataset.SOPInstanceUID)
            staged.mapped_study_uid = str(result.dataset.StudyInstanceUID)
        else:
            staged.held[source] = f"{result.outcome.value}: {result.reason}"[:300]
            log.warning("object held back", extra={"outcome": result.outcome.value})
            if result.outcome is Outcome.QUARANTINED and layout is not None:
                # The reason and where the original is; never the output that leaked.
                context = {"archive_path": layout.relative(obj.path), "project": settings.project}
                quarantine(layout, code="deidentification", message=result.reason, context=context)
    return staged
