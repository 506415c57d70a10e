"""``fiona pacs find``: KEY=VALUE words to a C-FIND identifier, answers to rows (no network)."""

import pytest
from pydicom import Dataset

from fiona_common.errors import BadInput
from fiona_ops.query import DEFAULT_KEYS, Level, build_query, parse_keys, row_of, table


def test_keys_are_dicom_keywords_in_any_case_and_key_alone_asks_for_a_column() -> None:
    keys = parse_keys(
        ["patientid=PAT-1", "StudyDate=20240101-20240131", "InstitutionName="], Level.STUDY
    )
    assert keys == {"PatientID": "PAT-1", "StudyDate": "20240101-20240131", "InstitutionName": ""}


def test_modality_means_modalities_in_study_at_study_level_only() -> None:
    assert parse_keys(["Modality=CT"], Level.STUDY) == {"ModalitiesInStudy": "CT"}
    assert parse_keys(["Modality=CT"], Level.SERIES) == {"Modality": "CT"}


@pytest.mark.parametrize("value", ["20240101", "20240101-", "-20240131", "20240101-20240131"])
def test_dicom_date_ranges_are_accepted(value: str) -> None:
    assert parse_keys([f"StudyDate={value}"], Level.STUDY)["StudyDate"] == value


@pytest.mark.parametrize(
    "word",
    ["StudyDate=2024-01-01", "StudyDate=20241301", "StudyDate=-", "Colour=red", "PatientID"],
)
def test_malformed_words_are_refused_with_a_reason(word: str) -> None:
    with pytest.raises(BadInput):
        parse_keys([word], Level.STUDY)


def test_the_query_asks_for_the_defaults_and_matches_on_the_given_keys() -> None:
    query, columns = build_query(
        Level.SERIES, {"StudyInstanceUID": "1.2.3", "BodyPartExamined": ""}
    )
    assert query.QueryRetrieveLevel == "SERIES"
    assert query.StudyInstanceUID == "1.2.3" and query.Modality == ""
    assert columns == [*DEFAULT_KEYS[Level.SERIES], "BodyPartExamined"]


def test_answers_become_rows_and_an_aligned_table() -> None:
    answer = Dataset()
    answer.PatientID = "PAT-1"
    answer.ModalitiesInStudy = ["MR", "SR"]
    answer.NumberOfStudyRelatedInstances = "12"
    columns = ["PatientID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyDate"]
    row = row_of(answer, columns)
    assert row == {
        "PatientID": "PAT-1",
        "ModalitiesInStudy": "MR\\SR",
        "NumberOfStudyRelatedInstances": "12",
        "StudyDate": "",
    }
    header, line = table([row], columns)
    assert header.index("ModalitiesInStudy") == line.index("MR\\SR")
    assert table([], columns) == ["(no matches)"]
