from services.classifier.summary import merge, public_view
from tests.builders import mr_dataset


def test_first_image_fills_the_original_fields_as_strings() -> None:
    ds = mr_dataset(
        ImageType=["ORIGINAL", "PRIMARY", "M"],
        AcquisitionMatrix=[0, 256, 256, 0],
        EchoTime=2.9,
        SliceLocation=-10.5,
    )
    summary = merge(None, ds, {"AETitleCaller": "SCANNER"})
    assert summary["ImageType"] == "['ORIGINAL', 'PRIMARY', 'M']"
    assert summary["AcquisitionMatrix"] == "[0, 256, 256, 0]"
    assert summary["EchoTime"] == "2.9"
    assert summary["ClassifyType"] == []
    assert summary["IncomingConnection"] == {"AETitleCaller": "SCANNER"}
    assert "ScanOptions" not in summary  # absent elements are not invented


def test_later_images_keep_first_values_but_the_lowest_slice_location() -> None:
    first = merge(None, mr_dataset(SeriesDescription="A", SliceLocation=5.0), {})
    second = merge(first, mr_dataset(SeriesDescription="B", SliceLocation=-2.0), {})
    assert second["SeriesDescription"] == "A"
    assert second["SliceLocation"] == "-2.0"


def test_private_fields_are_read_by_tag_number() -> None:
    ds = mr_dataset()
    ds.add_new(0x0051100F, "LO", "HEA;HEP")
    ds.add_new(0x0051100A, "LO", "TA 05:11")
    summary = merge(None, ds, {})
    assert summary["ActiveCoils"] == "HEA;HEP"
    assert summary["AcquisitionLength"] == "TA 05:11"


def test_public_view_drops_what_identifies_a_person() -> None:
    summary = merge(None, mr_dataset(PatientID="SECRET", PatientName="Doe^Jane"), {})
    view = public_view(summary)
    assert "PatientID" not in view and "PatientName" not in view
    assert "SECRET" not in str(view)
