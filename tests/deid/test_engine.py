"""Actions and options of the PS3.15 table, applied by the engine to built datasets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage

from fiona_deid.encoding import encode_with_pydicom
from fiona_deid.engine import deidentify
from fiona_deid.records import DeidResult, Done, Outcome
from fiona_deid.settings import DeidSettings, Policy, build_settings
from fiona_deid.stamps import OPTION_CODES
from tests.deid.dicom_builders import (
    KEY,
    REFERENCED_UID,
    SOP_UID,
    STUDY_UID,
    make_mr,
)


def run(settings: DeidSettings, ds: Dataset | None = None, event: str = "") -> DeidResult:
    result = deidentify(ds if ds is not None else make_mr(), settings, KEY, "SUBJ01", event)
    assert result.outcome is Outcome.EMITTED, result.reason
    return result


def basic(*options: str) -> DeidSettings:
    return build_settings("PROJ1", "basic", list(options))


def test_basic_profile_removes_empties_and_replaces() -> None:
    out = run(basic()).dataset
    assert out is not None
    assert "OperatorsName" not in out  # X/Z/D, Type 3 in MR: X
    assert "PatientAddress" not in out  # X
    assert "SeriesDescription" not in out  # X
    assert out.AccessionNumber in ("", None)  # Z
    assert out.PatientBirthDate in ("", None)  # Z
    assert out.StudyDate in ("", None)  # Z
    assert "AcquisitionDate" not in out  # X/Z: Type 3 in MR
    assert out.StudyInstanceUID != STUDY_UID and out.StudyInstanceUID.startswith("2.25.")
    assert out.Modality == "MR"  # not in the table: kept
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_combined_action_resolves_to_dummy_for_type_1_in_enhanced_iod() -> None:
    ds = make_mr(sop_class=EnhancedMRImageStorage)
    out = run(basic(), ds).dataset
    assert out is not None
    assert out.ContentDate == "19000101"  # Z/D, Type 1 in the multi-frame functional groups
    assert out.DeviceSerialNumber == "ANONYMIZED"  # X/Z/D, Type 1 in enhanced equipment
    assert out.AcquisitionDateTime == "19000101000000"


def test_classic_mr_empties_content_date_instead() -> None:
    out = run(basic()).dataset
    assert out is not None and out.ContentDate in ("", None)
    assert "DeviceSerialNumber" not in out


def presentation_state(referenced_sop_uid: str | None = None) -> Dataset:
    """A GSPS whose Referenced Image Sequence sits where PS3.3 puts it: in a series item."""
    ds = make_mr()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State
    images = ds.ReferencedImageSequence
    del ds.ReferencedImageSequence
    if referenced_sop_uid is not None:
        images[0].ReferencedSOPInstanceUID = referenced_sop_uid
    series = Dataset()
    series.SeriesInstanceUID = ds.SeriesInstanceUID
    series.ReferencedImageSequence = images
    ds.ReferencedSeriesSequence = Sequence([series])
    return ds


def test_uids_mapped_inside_sequences_and_reference_sequence_kept_for_presentation_state() -> None:
    ds = presentation_state()
    original = ds.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    settings = replace(basic(), presentation_state=Policy.PASS)
    out = run(settings, ds).dataset
    assert out is not None
    # X/Z/U*, Type 1 inside the Presentation State Relationship module: U, kept and mapped
    ref = out.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID.startswith("2.25.")
    assert ref.ReferencedSOPInstanceUID != REFERENCED_UID
    assert ref.ReferencedSOPClassUID == original.ReferencedSOPClassUID


def test_a_reference_sequence_optional_where_it_is_is_removed() -> None:
    ds = make_mr()  # MR Image: Referenced Image Sequence is Type 3 at the top level
    out = run(basic(), ds).dataset
    assert out is not None and "ReferencedImageSequence" not in out


def test_referenced_uid_maps_like_the_referenced_object() -> None:
    referring = presentation_state(referenced_sop_uid=SOP_UID)
    settings = replace(basic(), presentation_state=Policy.PASS)
    pointer = run(settings, referring).dataset
    target = run(settings).dataset
    assert pointer is not None and target is not None
    images = pointer.ReferencedSeriesSequence[0].ReferencedImageSequence
    assert images[0].ReferencedSOPInstanceUID == target.SOPInstanceUID


def test_nested_sequences_are_walked() -> None:
    ds = make_mr()
    ds.ContentSequence[0].ContentSequence[0].add_new(0x00081155, "UI", REFERENCED_UID)
    out = run(basic("clean-structured-content"), ds).dataset
    assert out is not None
    item = out.ContentSequence[0]
    # X/Z/D: Type 1 in one of MR's nested contexts, so a dummy inside sequences (not removed)
    assert item.InstitutionName == "ANONYMIZED"
    assert item.PersonName == "ANONYMIZED"  # D
    inner = item.ContentSequence[0]
    assert inner.ReferencedSOPInstanceUID != REFERENCED_UID
    assert inner.TextValue == "seen by on"  # cleaned: name and date gone
    assert "ObservationDateTime" not in inner  # X/D nested (Type 3): X


def test_content_sequence_is_emptied_without_clean_structured_content() -> None:
    out = run(basic()).dataset
    assert out is not None and len(out.ContentSequence) == 0  # D for a sequence: no items


@pytest.mark.parametrize(
    ("option", "keyword", "expected"),
    [
        ("retain-uids", "StudyInstanceUID", STUDY_UID),
        ("retain-device-identity", "StationName", "MRC12345"),
        ("retain-device-identity", "DeviceSerialNumber", "SN-998877"),
        ("retain-institution-identity", "InstitutionAddress", "Jonas Lies vei 65"),
        ("retain-institution-identity", "InstitutionName", "Haukeland University Hospital"),
        ("retain-patient-characteristics", "PatientAge", "054Y"),
        ("retain-patient-characteristics", "PatientSex", "M"),
        ("retain-long-full-dates", "StudyDate", "20240117"),
        ("retain-long-full-dates", "AcquisitionDate", "20240117"),
        ("retain-long-full-dates", "StudyTime", "101502"),
        ("clean-descriptors", "SeriesDescription", "t1_mprage"),
        ("clean-descriptors", "StudyDescription", "MR brain"),
        ("clean-descriptors", "ImageComments", "patient moved"),
    ],
)
def test_each_option_changes_its_rows(option: str, keyword: str, expected: str) -> None:
    without = run(basic()).dataset
    assert without is not None and without.get(keyword) != expected
    out = run(basic(option)).dataset
    assert out is not None and out.get(keyword) == expected


def test_modified_dates_shift_keep_intervals_and_times() -> None:
    ds = make_mr()
    ds.SeriesDate = "20240120"
    out = run(basic("retain-long-modified-dates"), ds).dataset
    assert out is not None
    assert out.StudyDate != "20240117"
    from datetime import date

    study = date.fromisoformat(f"{out.StudyDate[:4]}-{out.StudyDate[4:6]}-{out.StudyDate[6:]}")
    series = date.fromisoformat(f"{out.SeriesDate[:4]}-{out.SeriesDate[4:6]}-{out.SeriesDate[6:]}")
    assert (series - study).days == 3
    assert out.StudyTime == "101502"  # C for a time under whole-day shifts: unchanged
    assert out.AcquisitionDateTime.endswith("101900.123456")
    assert out.AcquisitionDateTime[:8] == out.AcquisitionDate
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_date_offset_per_participant_differs_between_participants() -> None:
    settings = build_settings(
        "PROJ1", "basic", ["retain-long-modified-dates", "date-offset-participant"]
    )
    one = deidentify(make_mr(), settings, KEY, "SUBJ01").dataset
    two = deidentify(make_mr(), settings, KEY, "SUBJ02").dataset
    assert one is not None and two is not None and one.StudyDate != two.StudyDate


def test_fixed_offset_is_the_project_days() -> None:
    settings = build_settings(
        "PROJ1", "basic", ["retain-long-modified-dates", "date-offset-fixed"], date_shift_days=42
    )
    out = run(settings).dataset
    assert out is not None and out.StudyDate == "20240228"


def test_full_and_modified_dates_exclude_each_other() -> None:
    from fiona_common.errors import ConfigError

    with pytest.raises(ConfigError):
        basic("retain-long-full-dates", "retain-long-modified-dates")


def test_clean_graphics_removes_overlay_bitmaps_and_keeps_overlay_geometry() -> None:
    ds = make_mr()
    ds.add_new(0x60000010, "US", 2)
    ds.add_new(0x60003000, "OW", b"\xff\x00")
    ds.add_new(0x60004000, "LT", "overlay by Doe")
    out = run(basic("clean-graphics"), ds).dataset
    assert out is not None
    assert 0x60003000 not in out  # a bitmap cannot be cleaned
    assert out[0x60004000].value == "overlay by"
    assert out[0x60000010].value == 2
    plain = run(basic(), make_mr_with_overlay()).dataset
    assert plain is not None and 0x60004000 not in plain


def make_mr_with_overlay() -> Dataset:
    ds = make_mr()
    ds.add_new(0x60024000, "LT", "comment")
    return ds


def test_private_tags_removed_without_retain_safe_private() -> None:
    out = run(basic()).dataset
    assert out is not None
    assert not [e for e in out if e.tag.is_private]


def test_safe_private_list_keeps_named_creator_elements_only() -> None:
    settings = build_settings(
        "PROJ1",
        "basic",
        ["retain-safe-private"],
        safe_private=["SIEMENS CSA HEADER:0029,xx10", "ACME HOSPITAL"],
    )
    out = run(settings).dataset
    assert out is not None
    csa = out.private_block(0x0029, "SIEMENS CSA HEADER")
    assert csa[0x10].value.startswith(b"SV10")
    assert 0x00291020 not in out  # same creator, element not on the list
    assert out.private_block(0x0011, "ACME HOSPITAL")[0x01].value == "some private value"


def test_safe_private_default_list_is_siemens_diffusion() -> None:
    out = run(build_settings("PROJ1", "recommended")).dataset
    assert out is not None
    assert 0x00291010 in out and 0x00291020 in out
    assert 0x00111001 not in out and 0x00110010 not in out


def test_pseudonym_project_event_and_method_are_recorded() -> None:
    result = run(build_settings("PROJ1", "recommended"), event="baseline")
    out = result.dataset
    assert out is not None
    assert out.PatientName == "SUBJ01" and out.PatientID == "SUBJ01"
    assert out.InstitutionName == "PROJ1"
    assert out.ClinicalTrialProtocolID == "PROJ1" and out.ClinicalTrialSubjectID == "SUBJ01"
    assert out.ClinicalTrialTimePointID == "baseline"
    assert out.PatientIdentityRemoved == "YES"
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    expected = {"113100"} | {
        OPTION_CODES[o][0] for o in build_settings("P", "recommended").effective_options
    }
    assert codes == expected == {"113100", "113105", "113107", "113108", "113109", "113111"}
    assert "retain-safe-private" in out.DeidentificationMethod


def test_audit_names_tags_and_never_values() -> None:
    result = run(basic())
    entries = {(e.tag_text, e.done) for e in result.audit}
    assert ("(0008,1070)", Done.REMOVED) in entries
    assert ("(0008,0050)", Done.EMPTIED) in entries
    assert ("(0020,000D)", Done.REPLACED) in entries
    assert ("(0008,0060)", Done.KEPT) in entries
    assert ("(0040,A730)[0]>(0040,A123)", Done.DUMMY) not in entries  # emptied sequence
    text = repr([e.as_dict() for e in result.audit])
    for secret in ("Doe", "PID445566", "ACC20240101", "19700315", STUDY_UID):
        assert secret not in text


def test_header_rewrite_keeps_capture_groups() -> None:
    settings = build_settings(
        "PROJ1", "recommended", header_rewrite=("SeriesDescription", r"^(t1)_(mprage)$")
    )
    out = run(settings).dataset
    assert out is not None and out.SeriesDescription == "t1 mprage"


def test_pixel_data_is_copied_byte_for_byte_and_meta_matches() -> None:
    ds = make_mr()
    pixels = ds.PixelData
    result = run(build_settings("PROJ1", "recommended"))
    out = result.dataset
    assert out is not None and out.PixelData == pixels
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == out.SOPClassUID
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert result.encoded is not None and pixels in result.encoded


def test_sequence_items_in_removed_sequence_do_not_survive() -> None:
    ds = make_mr()
    item = Dataset()
    item.PatientID = "PID445566"
    ds.OtherPatientIDsSequence = Sequence([item])
    out = run(basic(), ds).dataset
    assert out is not None and "OtherPatientIDsSequence" not in out


def test_fast_encoder_writes_the_same_bytes_as_pydicom(tmp_path: Path) -> None:
    path = tmp_path / "in.dcm"
    make_mr().save_as(path, enforce_file_format=True)  # read back: raw elements, as in service
    result = deidentify(pydicom.dcmread(path), basic("retain-safe-private"), KEY, "SUBJ01")
    assert result.dataset is not None and result.encoded is not None
    assert result.encoded == encode_with_pydicom(result.dataset)
