"""What de-identification returns: the outcome, the output, and the audit record."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset


class Outcome(StrEnum):
    EMITTED = "emitted"
    DROPPED = "dropped"  # by the project's policy (e.g. drop presentation states)
    QUARANTINED = "quarantined"  # needs a human: burned-in text, a leak, an unreadable object


class Done(StrEnum):
    """What happened to one element (the audit's vocabulary)."""

    REMOVED = "removed"
    EMPTIED = "emptied"
    DUMMY = "dummy"
    REPLACED = "replaced"  # UIDs, pseudonyms, hashed values, header rewrite
    SHIFTED = "shifted"  # dates moved by the offset
    CLEANED = "cleaned"  # free text scrubbed, sequence walked with its text scrubbed
    KEPT = "kept"
    CREATED = "created"


class AuditEntry(NamedTuple):
    """One element of one object: where it is, and what was done. Never the value."""

    path: str  # "" at the top level, "(0040,A730)[0]>" inside the first item of a sequence
    tag: int
    done: Done
    why: str  # the rule's source: "basic", an option name, "fiona", "pseudonym", "unlisted"

    @property
    def keyword(self) -> str:
        if (self.tag >> 16) % 2:
            return "private"
        return keyword_for_tag(self.tag) or "unknown"

    @property
    def tag_text(self) -> str:
        return f"{self.path}({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"

    def as_dict(self) -> dict[str, str]:
        return {"tag": self.tag_text, "keyword": self.keyword, "done": self.done, "why": self.why}


@dataclass
class DeidResult:
    """``dataset``/``encoded`` are set only when the outcome is ``emitted``; ``encoded`` is the
    Part-10 file the leak guard checked (write these bytes, do not re-encode)."""

    outcome: Outcome
    reason: str = ""
    dataset: Dataset | None = None
    encoded: bytes | None = None
    audit: list[AuditEntry] = field(default_factory=list)
