"""Determinism of the keyed mapping, object policies, and the leak guard."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import SecondaryCaptureImageStorage

from fiona_deid.engine import deidentify
from fiona_deid.keyed import KeyedMapper
from fiona_deid.leak import identifiers_of, leak_check
from fiona_deid.records import Outcome
from fiona_deid.settings import Policy, build_settings
from tests.deid.dicom_builders import KEY, STUDY_UID, make_mr

RECOMMENDED = build_settings("PROJ1", "recommended")


def uids_of(project: str, key: bytes = KEY, **kwargs: str) -> tuple[str, str, str]:
    out = deidentify(make_mr(**kwargs), build_settings(project, "recommended"), key, "S1").dataset
    assert out is not None
    return out.StudyInstanceUID, out.SeriesInstanceUID, out.SOPInstanceUID


def test_same_input_and_key_give_the_same_output_bytes() -> None:
    one = deidentify(make_mr(), RECOMMENDED, KEY, "S1", "baseline")
    two = deidentify(make_mr(), RECOMMENDED, KEY, "S1", "baseline")
    assert one.encoded is not None and one.encoded == two.encoded


def test_other_project_gets_other_uids() -> None:
    assert set(uids_of("PROJ1")).isdisjoint(uids_of("PROJ2"))


def test_other_key_gets_other_uids() -> None:
    assert set(uids_of("PROJ1")).isdisjoint(uids_of("PROJ1", key=b"another key of 16+ bytes"))


def test_late_series_joins_its_study() -> None:
    first = uids_of("PROJ1")
    late = uids_of("PROJ1", sop_uid="1.2.826.0.1.3680043.8.498.1001.2.1", series_uid="1.2.3.2")
    assert late[0] == first[0] and late[1] != first[1] and late[2] != first[2]


def test_mapped_uids_are_valid_and_short() -> None:
    mapper = KeyedMapper(KEY, "PROJ1")
    uid = mapper.uid(STUDY_UID)
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert all(part == "0" or not part.startswith("0") for part in uid.split("."))


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        KeyedMapper(b"short", "PROJ1")


@pytest.mark.parametrize(
    ("change", "policy_field", "what"),
    [
        ({"BurnedInAnnotation": "YES"}, "burned_in", "burned-in annotation"),
        ({"SOPClassUID": SecondaryCaptureImageStorage}, "secondary_capture", "secondary capture"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.11.1"}, "presentation_state", "presentation"),
    ],
)
def test_risky_objects_follow_policy_and_are_never_passed_by_default(
    change: dict[str, str], policy_field: str, what: str
) -> None:
    def attempt(policy: Policy | None) -> Outcome:
        ds = make_mr()
        for keyword, value in change.items():
            setattr(ds, keyword, value)
        settings = RECOMMENDED if policy is None else replace(RECOMMENDED, **{policy_field: policy})
        result = deidentify(ds, settings, KEY, "S1")
        assert policy is Policy.PASS or what in result.reason
        return result.outcome

    assert attempt(None) is Outcome.QUARANTINED
    assert attempt(Policy.DROP) is Outcome.DROPPED
    assert attempt(Policy.PASS) is Outcome.EMITTED


def test_project_features_map_to_policies() -> None:
    settings = build_settings(
        "P", "basic", drop_presentation_states=True, never_mask_burned_in=True
    )
    assert settings.presentation_state is Policy.DROP
    assert settings.burned_in is Policy.PASS
    assert settings.secondary_capture is Policy.QUARANTINE


def test_leak_guard_catches_identifier_planted_in_safe_private_tag() -> None:
    ds = make_mr()
    ds.private_block(0x0029, "SIEMENS CSA HEADER")[0x10].value = b"SV10 tPatientName=DOE^JOHNATHAN"
    result = deidentify(ds, RECOMMENDED, KEY, "S1")
    assert result.outcome is Outcome.QUARANTINED
    assert "patient name in (0029,1010)" in result.reason
    assert "JOHNATHAN" not in result.reason.upper()
    assert result.encoded is None and result.dataset is None


def test_leak_guard_catches_identifier_in_nested_sequence_of_kept_element() -> None:
    ds = make_mr()
    item = Dataset()
    item.CodeValue = "X1"
    item.CodingSchemeDesignator = "99LOCAL"
    item.CodeMeaning = "scan for PID445566"
    outer = Dataset()
    outer.AnatomicRegionSequence = Sequence([item])
    ds.add_new(0x00189346, "SQ", Sequence([outer]))  # CTDI Phantom Type Code Seq (not listed)
    result = deidentify(ds, RECOMMENDED, KEY, "S1")
    assert result.outcome is Outcome.QUARANTINED
    assert "patient ID in (0018,9346)[0]>(0008,2218)[0]>(0008,0104)" in result.reason


def test_leak_guard_catches_unshifted_original_date() -> None:
    ds = make_mr()
    ds.add_new(0x00189074, "DT", "20240117120000")  # Frame Acquisition DateTime: not listed
    ds.add_new(0x00211001, "LO", "x")
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER")
    block[0x20].value = b"acquired 20240117"
    result = deidentify(ds, RECOMMENDED, KEY, "S1")
    assert result.outcome is Outcome.QUARANTINED
    assert "original date in (0029,1020)" in result.reason
    assert "(0018,9074)" not in result.reason  # unlisted dates are shifted too


def test_participant_id_equal_to_old_patient_id_is_not_a_leak() -> None:
    result = deidentify(make_mr(), RECOMMENDED, KEY, "PID445566")
    assert result.outcome is Outcome.EMITTED


def test_leak_check_reports_tags_of_an_unprocessed_copy() -> None:
    ds = make_mr()
    found = leak_check(ds, identifiers_of(ds))
    assert "patient name in (0010,0010)" in found
    assert "accession number in (0008,0050)" in found
    assert any(f.startswith("patient name in (0040,A730)[0]>(0040,A730)[0]>") for f in found)


def test_the_engines_own_method_text_is_no_leak() -> None:
    # Regression: a patient named "Patient" (or "Retain", "Profile"...) met the words of the
    # DeidentificationMethod text and code meanings the engine writes itself.
    ds = make_mr()
    ds.PatientName = "Doe^Patient"
    result = deidentify(ds, RECOMMENDED, KEY, "S1")
    assert result.outcome is Outcome.EMITTED, result.reason
