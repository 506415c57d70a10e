"""The pseudonymization written after the table pass, and the record of what was done
(PatientIdentityRemoved, De-identification Method and its CID 7050 codes, LTIM)."""

from functools import lru_cache
from io import BytesIO

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from fiona_deid.elements import ascii_values
from fiona_deid.records import AuditEntry, Done
from fiona_deid.settings import DeidSettings, Option, Preset
from fiona_deid.table import FIONA_EVENT_STAMPS

# CID 7050 De-identification Method (PS3.16), scheme DCM.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES = {
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONG_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    Option.RETAIN_LONG_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}
FIONA_METHOD = "{Per DICOM PS 3.15 AnnexE}"  # what the original writes
FIONA_CODE = ("FIONA-COMPAT", "99FIONA", "FIONA-compatible rules (not the PS3.15 basic profile)")


def method_codes(settings: DeidSettings) -> list[tuple[str, str, str]]:
    """(code value, scheme, meaning) of the profile and each option applied, in code order."""
    if settings.preset is Preset.FIONA:
        return [FIONA_CODE]
    codes = [BASIC_PROFILE_CODE] + [OPTION_CODES[o] for o in settings.effective_options]
    return [(value, "DCM", meaning) for value, meaning in sorted(codes)]


def method_text(settings: DeidSettings, edition: str) -> list[str]:
    if settings.preset is Preset.FIONA:
        return [FIONA_METHOD]
    year = edition.split()[0]
    options = sorted(str(o) for o in settings.effective_options)
    return [f"FIONA {settings.preset} PS3.15 E.1-1 {year}"[:64], *options]


def temporal_state(settings: DeidSettings) -> str:
    """(0028,0303) Longitudinal Temporal Information Modified."""
    options = settings.effective_options
    if settings.preset is Preset.FIONA or Option.RETAIN_LONG_MODIFIED_DATES in options:
        return "MODIFIED"
    if Option.RETAIN_LONG_FULL_DATES in options:
        return "UNMODIFIED"
    return "REMOVED"


_KEEP_IF_PRESENT = (0x00120030, 0x00120031)  # Clinical Trial Site ID/Name: Type 2, else empty


def stamp(
    ds: Dataset, settings: DeidSettings, edition: str, subject: str, event: str
) -> list[AuditEntry]:
    """Write the pseudonym, project, event and method attributes; their audit entries."""
    implicit, little = ds.original_encoding
    charset = tuple(ascii_values(ds, 0x00080005))
    elements = _stamp_elements(
        settings, edition, subject, event, bool(implicit), little is not False, charset
    )
    audit = []
    for raw in elements:
        tag = int(raw.tag)
        existed = tag in ds
        if existed and tag in _KEEP_IF_PRESENT:
            continue
        ds[tag] = raw
        why = "fiona" if tag in FIONA_EVENT_STAMPS else "pseudonym"
        audit.append(AuditEntry("", tag, Done.REPLACED if existed else Done.CREATED, why))
    return audit


@lru_cache(maxsize=512)
def _stamp_elements(
    settings: DeidSettings,
    edition: str,
    subject: str,
    event: str,
    implicit: bool,
    little: bool,
    charset: tuple[str, ...],
) -> tuple[RawDataElement, ...]:
    """The stamped elements, encoded once per participant and event and shared as raw
    (immutable) elements: a study's objects all get the same ones."""
    stamped = _stamp_dataset(settings, edition, subject, event)
    if charset:
        stamped.SpecificCharacterSet = list(charset) if len(charset) > 1 else charset[0]
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, stamped)
    decoded = read_dataset(BytesIO(buffer.getvalue()), implicit, little)
    elements: list[DataElement | RawDataElement] = [decoded.get_item(t) for t in decoded.keys()]
    return tuple(
        sorted(
            (e for e in elements if isinstance(e, RawDataElement) and e.tag != 0x00080005),
            key=lambda e: e.tag,
        )
    )


def _stamp_dataset(settings: DeidSettings, edition: str, subject: str, event: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = subject
    ds.PatientID = subject
    ds.ClinicalTrialSponsorName = settings.project
    ds.ClinicalTrialProtocolID = settings.project
    ds.ClinicalTrialProtocolName = settings.project
    ds.ClinicalTrialSiteID = ""
    ds.ClinicalTrialSiteName = ""
    ds.ClinicalTrialSubjectID = subject
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = method_text(settings, edition)
    ds.LongitudinalTemporalInformationModified = temporal_state(settings)
    if Option.RETAIN_INSTITUTION_IDENTITY not in settings.effective_options:
        ds.InstitutionName = settings.project
    if event:
        ds.ClinicalTrialTimePointID = event[:64]
        ds.ClinicalTrialTimePointDescription = event
    if settings.preset is Preset.FIONA and event:
        for tag in FIONA_EVENT_STAMPS:
            ds.add_new(tag, dictionary_VR(tag), f"EventName:{event}"[:64])
    ds.DeidentificationMethodCodeSequence = Sequence(
        [_code(value, scheme, meaning) for value, scheme, meaning in method_codes(settings)]
    )
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
