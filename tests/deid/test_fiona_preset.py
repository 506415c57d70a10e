"""The FIONA-compatible preset reproduces the original's observable output (spec 7.5)."""

from __future__ import annotations

import hashlib

from fiona_deid.engine import deidentify
from fiona_deid.keyed import fiona_uid
from fiona_deid.records import Outcome
from fiona_deid.settings import build_settings
from tests.deid.dicom_builders import KEY, SOP_UID, STUDY_UID, make_mr

FIONA = build_settings("MEMO", "fiona", date_shift_days=42)


def fiona_output():  # type: ignore[no-untyped-def]
    ds = make_mr()
    del ds.ImageComments  # kept by the original's rules; it names the patient here
    result = deidentify(ds, FIONA, KEY, "MEMO001", "baseline")
    assert result.outcome is Outcome.EMITTED, result.reason
    assert result.dataset is not None
    return result.dataset


def test_uids_follow_the_original_formula() -> None:
    out = fiona_output()
    digest = hashlib.sha256((STUDY_UID + "MEMO").encode()).hexdigest()
    expected = ("1.3.6.1.4.1.45037." + digest.translate(str.maketrans("abcdef", "012345")))[:63]
    assert out.StudyInstanceUID == expected == fiona_uid(STUDY_UID, "MEMO")
    assert out.SOPInstanceUID == fiona_uid(SOP_UID, "MEMO")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_dates_shift_42_days_times_kept_birth_date_emptied() -> None:
    out = fiona_output()
    assert out.StudyDate == "20240228" and out.SeriesDate == "20240228"
    assert out.AcquisitionDateTime == "20240228101900.123456"
    assert out.StudyTime == "101502"
    assert out.PatientBirthDate in ("", None)
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_event_goes_into_referring_physician_and_time_point() -> None:
    out = fiona_output()
    assert out.ReferringPhysicianName == "EventName:baseline"
    assert out.ReasonForTheRequestedProcedure == "EventName:baseline"
    assert out.ClinicalTrialTimePointID == "baseline"


def test_forced_values_hashes_and_kept_characteristics() -> None:
    out = fiona_output()
    assert out.PatientName == "MEMO001" and out.PatientID == "MEMO001"
    assert out.InstitutionName == "MEMO"
    assert out.ClinicalTrialProtocolID == "MEMO" and out.ClinicalTrialSubjectID == "MEMO001"
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == "{Per DICOM PS 3.15 AnnexE}"
    assert len(out.AccessionNumber) == 16 and out.AccessionNumber.isdigit()
    assert out.PatientSex == "M" and out.PatientAge == "054Y"
    assert out.SeriesDescription == "t1_mprage" and out.BodyPartExamined == "BRAIN"
    assert "OperatorsName" not in out and "PatientAddress" not in out


def test_private_data_is_kept_as_the_original_did() -> None:
    out = fiona_output()
    assert 0x00291010 in out and 0x00111001 in out


def test_unknown_body_part_is_replaced() -> None:
    ds = make_mr()
    del ds.ImageComments
    ds.BodyPartExamined = "LEFT THING"
    out = deidentify(ds, FIONA, KEY, "MEMO001").dataset
    assert out is not None and out.BodyPartExamined == "BODYPART"


def test_kept_free_text_with_a_name_is_quarantined_by_the_leak_guard() -> None:
    result = deidentify(make_mr(), FIONA, KEY, "MEMO001")  # ImageComments names the patient
    assert result.outcome is Outcome.QUARANTINED
    assert "(0020,4000)" in result.reason


def test_missing_study_date_is_created_as_the_original_did() -> None:
    ds = make_mr()
    del ds.ImageComments
    del ds.StudyDate
    out = deidentify(ds, FIONA, KEY, "MEMO001").dataset
    assert out is not None and out.StudyDate == "19700101"
