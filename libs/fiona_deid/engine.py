"""De-identify one DICOM object for a project: policy check, rule pass, pseudonym, leak guard.

Pure: no files, no clock, no environment. :mod:`fiona_deid.files` reads and writes.
"""

import re
import uuid
from functools import lru_cache

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from fiona_deid.encoding import encode
from fiona_deid.keyed import KeyedMapper
from fiona_deid.leak import Identifiers, find_in_bytes, identifiers_of, leak_check
from fiona_deid.records import AuditEntry, DeidResult, Done, Outcome
from fiona_deid.settings import DateOffset, DeidSettings, Option, Policy, Preset
from fiona_deid.stamps import stamp
from fiona_deid.table import compile_rules, load_tables
from fiona_deid.walk import Walker

IMPLEMENTATION_CLASS_UID = UID("2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "fiona-deid").int))
IMPLEMENTATION_VERSION = "FIONA_DEID_1"
NO_MATCH = "FIONA: no match on regular expression"  # the original's value (spec 7.4)
FIONA_MISSING_STUDY_DATE = "19700101"
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11."
_PIXEL_DATA = 0x7FE00010
_UID_CACHE_LIMIT = 200_000


def deidentify(
    ds: Dataset, settings: DeidSettings, key: bytes, subject: str, event: str = ""
) -> DeidResult:
    """De-identify ``ds`` **in place** for ``settings.project`` and participant ``subject``.

    Returns the outcome; when emitted, ``encoded`` holds the Part-10 bytes the leak guard
    checked. Pass a copy if the caller still needs the original dataset.
    """
    if not subject:
        raise ValueError("a participant ID is needed")
    refusal = _policy_refusal(ds, settings)
    if refusal is not None:
        return refusal
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        return DeidResult(Outcome.QUARANTINED, "no SOP Instance UID or SOP Class UID")
    identifiers = identifiers_of(ds)
    rewrite_source = _rewrite_source(ds, settings)
    walker = _walker(ds, settings, key, subject, identifiers)
    walker.walk(ds)
    audit = walker.audit
    audit += _rewrite(ds, settings, rewrite_source)
    audit += stamp(ds, settings, load_tables().edition, subject, event)
    audit += _fiona_study_date(ds, settings)
    _set_file_meta(ds)
    encoded = encode(ds)
    for uid in walker.original_uids:
        identifiers.add_uid(uid)
    for day in walker.original_dates:
        identifiers.add_date(day)
    identifiers.discard([subject, event, settings.project])
    leaks = _leaks(ds, encoded, identifiers)
    if leaks:
        reason = "leak guard: " + "; ".join(leaks)
        return DeidResult(Outcome.QUARANTINED, reason, audit=audit)
    return DeidResult(Outcome.EMITTED, dataset=ds, encoded=encoded, audit=audit)


def _policy_refusal(ds: Dataset, settings: DeidSettings) -> DeidResult | None:
    """Drop or quarantine objects the project does not want passed (never silently passed)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    checks = (
        (
            sop_class.startswith(_PRESENTATION_STATE),
            settings.presentation_state,
            "presentation state",
        ),
        (
            sop_class == _SECONDARY_CAPTURE or sop_class.startswith(_SECONDARY_CAPTURE + "."),
            settings.secondary_capture,
            "secondary capture",
        ),
        (
            str(ds.get("BurnedInAnnotation", "")).upper() == "YES",
            settings.burned_in,
            "burned-in annotation",
        ),
    )
    for applies, policy, what in checks:
        if applies and policy is not Policy.PASS:
            outcome = Outcome.DROPPED if policy is Policy.DROP else Outcome.QUARANTINED
            return DeidResult(outcome, f"{what}: project policy is {policy}")
    return None


def _walker(
    ds: Dataset, settings: DeidSettings, key: bytes, subject: str, identifiers: Identifiers
) -> Walker:
    mapper = _mapper(key, settings.project, settings.preset is Preset.FIONA)
    rules = compile_rules(settings, str(ds.SOPClassUID))
    placeholders = {
        "ProjectName": settings.project,
        "PROJECTNAME": settings.project,
        "project": settings.project,
        "Re-Mapped": subject,
        "PatientID": subject,
        "study_uid": str(ds.get("StudyInstanceUID", "")),
    }
    return Walker(
        rules,
        mapper,
        _day_offset(settings, mapper, subject),
        settings.effective_safe_private,
        tuple(identifiers.texts()),
        placeholders,
    )


@lru_cache(maxsize=16)
def _mapper(key: bytes, project: str, legacy: bool) -> KeyedMapper:
    """One mapper per key and project, so its UID cache serves a whole study."""
    return KeyedMapper(key, project, legacy, cache_limit=_UID_CACHE_LIMIT)


def _day_offset(settings: DeidSettings, mapper: KeyedMapper, subject: str) -> int | None:
    """Days added to dates, or None when dates are not modified (kept or removed)."""
    modified = settings.preset is Preset.FIONA or (
        Option.RETAIN_LONG_MODIFIED_DATES in settings.effective_options
    )
    if not modified:
        return None
    if settings.date_offset is DateOffset.FIXED:
        return settings.date_shift_days
    participant = subject if settings.date_offset is DateOffset.PARTICIPANT else None
    return mapper.date_offset_days(participant)


def _rewrite_source(ds: Dataset, settings: DeidSettings) -> str | None:
    rewrite = settings.header_rewrite
    if rewrite is None or rewrite.tag not in ds:
        return None
    return str(ds[rewrite.tag].value or "")


def _rewrite(ds: Dataset, settings: DeidSettings, source: str | None) -> list[AuditEntry]:
    """The project's header rewrite (spec 7.11): only the regex's capture groups survive."""
    rewrite = settings.header_rewrite
    if rewrite is None or source is None:
        return []
    match = re.search(rewrite.regex, source)
    value = " ".join(g for g in match.groups() if g) if match else NO_MATCH
    ds.add_new(rewrite.tag, dictionary_VR(rewrite.tag), value)
    return [AuditEntry("", rewrite.tag, Done.REPLACED, "header rewrite")]


def _fiona_study_date(ds: Dataset, settings: DeidSettings) -> list[AuditEntry]:
    """The original creates a missing or unreadable StudyDate as 1970-<random month>-01 so the
    research PACS accepts the study; FIONA uses January, to stay deterministic."""
    if settings.preset is not Preset.FIONA or ds.get("StudyDate"):
        return []
    existed = "StudyDate" in ds
    ds.StudyDate = FIONA_MISSING_STUDY_DATE
    return [AuditEntry("", 0x00080020, Done.REPLACED if existed else Done.CREATED, "fiona")]


def _set_file_meta(ds: Dataset) -> None:
    """Fresh file meta (the old one names the sending AE): SOP UIDs equal to the dataset's."""
    old = getattr(ds, "file_meta", None)
    syntax = getattr(old, "TransferSyntaxUID", None) or ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta


def _leaks(ds: Dataset, encoded: bytes, identifiers: Identifiers) -> list[str]:
    """Fast check on the encoded header; on a hit (or deflated data) walk to say where."""
    deflated = ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    header = encoded[: len(encoded) - _trailing_pixel_bytes(ds)]
    if not deflated and not find_in_bytes(header, identifiers):
        return []
    # The walk sees every element but pixel data and the engine's own stamps, so a hit of the
    # fast check that the walk does not confirm was in those stamps.
    return leak_check(ds, identifiers)


def _trailing_pixel_bytes(ds: Dataset) -> int:
    """Length of the pixel data when it is the last element (so the header precedes it)."""
    if _PIXEL_DATA not in ds or max(ds.keys()) != _PIXEL_DATA:
        return 0
    value = ds.get_item(_PIXEL_DATA).value
    return len(value) if isinstance(value, bytes | bytearray) else 0
