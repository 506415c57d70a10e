import gzip
import io
from pathlib import Path

import nibabel
import pydicom
import pytest
from pydicom import Dataset

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


def siemens_dwi(name: str) -> Dataset:
    """Siemens diffusion images with CSA headers, from the test data nibabel ships."""
    data = (Path(nibabel.__file__).parent / "nicom/tests/data" / name).read_bytes()
    return pydicom.dcmread(io.BytesIO(gzip.decompress(data)), stop_before_pixels=True)


def test_siemens_csa_fields_and_diffusion_entries_once_per_image() -> None:
    b0, b1000 = siemens_dwi("siemens_dwi_0.dcm.gz"), siemens_dwi("siemens_dwi_1000.dcm.gz")
    summary = merge(None, b0, {})
    summary = merge(summary, b1000, {})
    summary = merge(summary, b1000, {})  # the same image again (a redelivery)
    assert summary["NumSlices"] == "48"
    assert summary["OSLevel"] == "VB17A_LATEST_20090307"
    assert summary["PhaseEncodingDirectionPositive"] == "1"
    entries = summary["siemensDiffusionInformation"]
    assert [e["B_value"] for e in entries] == ["0", "1000"]
    assert entries[1]["DiffusionGradientDirection"] == pytest.approx([1.0, 0.005, -0.005], abs=1e-3)


def test_non_siemens_objects_have_no_csa_fields() -> None:
    summary = merge(None, mr_dataset(SoftwareVersions="27\\LX\\MR Software release:DV26.0"), {})
    assert summary["OSLevel"] == "DV26.0"
    assert "siemensDiffusionInformation" not in summary and "NumSlices" not in summary


def test_a_sender_learnt_later_replaces_an_unknown_one_but_never_the_reverse() -> None:
    # An image announced again from the archive after a crash may be the series' first.
    unknown = {"AETitleCaller": "unknown", "AETitleCalled": "unknown", "CallerIP": "unknown"}
    known = {"AETitleCaller": "SCANNER", "AETitleCalled": "DEMO", "CallerIP": "10.0.0.7"}
    summary = merge(merge(None, mr_dataset(), unknown), mr_dataset(), known)
    assert summary["IncomingConnection"] == known
    assert merge(summary, mr_dataset(), unknown)["IncomingConnection"] == known
