"""fiona_common.dicomfile: the hand-made header scan must give what pydicom's dcmread gives."""

import gzip
import warnings
from pathlib import Path
from typing import Any

import nibabel
import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from fiona_common import dicomfile
from fiona_common.dicomfile import read_dataset, read_file_meta, read_header
from tests.builders import mr_dataset, pydicom_test_files_dir, write_part10


def differences(ours: Dataset, theirs: Dataset, where: str = "") -> list[str]:
    """Where two datasets differ in tags, VRs or values (sequences item by item)."""
    found = []
    if set(ours.keys()) != set(theirs.keys()):
        found.append(f"{where}tags {sorted(set(ours.keys()) ^ set(theirs.keys()))}")
    for tag in set(ours.keys()) & set(theirs.keys()):
        a, b = ours[tag], theirs[tag]
        if a.VR != b.VR:
            found.append(f"{where}{tag} VR {a.VR} != {b.VR}")
        elif a.VR == "SQ":
            if len(a.value) != len(b.value):
                found.append(f"{where}{tag} {len(a.value)} items != {len(b.value)}")
            for n, (x, y) in enumerate(zip(a.value, b.value, strict=False)):
                found += differences(x, y, f"{where}{tag}[{n}].")
        elif a.value != b.value:
            found.append(f"{where}{tag} {a.value!r:.40} != {b.value!r:.40}")
    return found


class Fallbacks:
    """Counts the files handed to pydicom's dcmread (the scan could not read them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0

        def counted(*args: Any, **kwargs: Any) -> FileDataset:
            self.count += 1
            return dcmread(*args, **kwargs)

        monkeypatch.setattr(dicomfile, "dcmread", counted)


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> Fallbacks:
    return Fallbacks(monkeypatch)


def scanned(path: Path, fallbacks: Fallbacks, stop_before_pixels: bool = True) -> FileDataset:
    """read_dataset's result, asserting it came from the scan, not from the pydicom fallback."""
    before = fallbacks.count
    ds = read_dataset(path, stop_before_pixels)
    assert fallbacks.count == before, f"{path.name}: the scan fell back to pydicom"
    return ds


def shipped_files() -> list[Path]:
    nibabel_data = Path(nibabel.__file__).parent / "nicom/tests/data"
    return sorted(pydicom_test_files_dir().rglob("*.dcm")) + sorted(nibabel_data.glob("*.dcm"))


# Whole files: encapsulated (compressed) pixel data, most of pydicom's files, goes to pydicom.
@pytest.mark.parametrize(("stop_before_pixels", "least_scanned"), [(True, 50), (False, 20)])
def test_every_readable_shipped_file_reads_as_pydicom_reads_it(
    fallbacks: Fallbacks, stop_before_pixels: bool, least_scanned: int
) -> None:
    compared = 0
    for path in shipped_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                theirs = dcmread(path, stop_before_pixels=stop_before_pixels)
            except Exception:
                continue
            ours = read_dataset(path, stop_before_pixels)
        assert differences(ours, theirs) == [], path.name
        assert differences(ours.file_meta, theirs.file_meta) == [], path.name
        assert (ours.preamble, ours.original_encoding) == (
            theirs.preamble,
            theirs.original_encoding,
        ), path.name
        compared += 1
    # pydicom's and nibabel's files: ~80 readable, most little endian (the scan's case).
    assert compared >= 60 and compared - fallbacks.count >= least_scanned, fallbacks.count


def nested_sequences(depth: int, undefined: bool, every_item_undefined: bool = False) -> Dataset:
    """A dataset whose ReferencedImageSequence nests ``depth`` levels, plus private data.

    ``undefined``: sequences of undefined length, and items too at every other level (or at
    every level with ``every_item_undefined``).
    """
    ds = mr_dataset()
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.4"
    for level in range(depth):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        item.ReferencedImageSequence = Sequence([inner, Dataset()])
        item["ReferencedImageSequence"].is_undefined_length = undefined
        for child in item.ReferencedImageSequence:
            child.is_undefined_length_sequence_item = undefined and (
                every_item_undefined or level % 2 == 0
            )
        inner = item
    inner.is_undefined_length_sequence_item = undefined
    ds.ReferencedImageSequence = Sequence([inner])
    ds["ReferencedImageSequence"].is_undefined_length = undefined
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" + bytes(200))
    ds.SeriesDescription = "t1_mprage_sag"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("undefined", [True, False])
def test_nested_sequences_of_either_length_and_either_vr_encoding(
    tmp_path: Path, fallbacks: Fallbacks, syntax: str, undefined: bool
) -> None:
    ds = nested_sequences(depth=4, undefined=undefined)
    ds.file_meta.TransferSyntaxUID = syntax
    path = write_part10(ds, tmp_path / "nested.dcm")
    ours = scanned(path, fallbacks)
    assert differences(ours, dcmread(path, stop_before_pixels=True)) == []
    assert ours.SeriesDescription == "t1_mprage_sag" and "PixelData" not in ours
    deepest = ours.ReferencedImageSequence[0]
    for _ in range(3):
        deepest = deepest.ReferencedImageSequence[0]
    assert deepest.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"


def test_siemens_csa_headers_read_as_pydicom_reads_them(
    tmp_path: Path, fallbacks: Fallbacks
) -> None:
    data = Path(nibabel.__file__).parent / "nicom/tests/data/siemens_dwi_1000.dcm.gz"
    path = tmp_path / "dwi.dcm"
    path.write_bytes(gzip.decompress(data.read_bytes()))
    assert differences(scanned(path, fallbacks), dcmread(path, stop_before_pixels=True)) == []


def test_sequences_nested_deeper_than_the_scan_goes_are_read_by_pydicom(
    tmp_path: Path, fallbacks: Fallbacks
) -> None:
    ds = nested_sequences(40, undefined=True, every_item_undefined=True)
    path = write_part10(ds, tmp_path / "deep.dcm")
    ours = read_header(path)
    assert fallbacks.count == 1  # pydicom's reader took over
    assert differences(ours, dcmread(path, stop_before_pixels=True)) == []


def test_the_pixel_data_is_never_read(tmp_path: Path, fallbacks: Fallbacks) -> None:
    path = write_part10(mr_dataset(rows=512, cols=512), tmp_path / "big.dcm")
    data = path.read_bytes()
    pixel_start = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
    path.write_bytes(data[: pixel_start + 12])  # the 512 KiB value is gone
    assert scanned(path, fallbacks).Rows == 512


def test_whole_files_with_their_pixel_data_and_file_meta(
    tmp_path: Path, fallbacks: Fallbacks
) -> None:
    ds = nested_sequences(depth=3, undefined=True)
    path = write_part10(ds, tmp_path / "whole.dcm")
    ours, theirs = scanned(path, fallbacks, stop_before_pixels=False), dcmread(path)
    assert differences(ours, theirs) == [] and ours.PixelData == ds.PixelData
    assert differences(ours.file_meta, theirs.file_meta) == []
    assert ours.filename == str(path) and ours.preamble == theirs.preamble


def test_a_truncated_header_gets_pydicoms_answer(tmp_path: Path) -> None:
    whole = write_part10(nested_sequences(depth=2, undefined=True), tmp_path / "whole.dcm")
    data = whole.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: data.find(b"t1_mprage_sag") + 4])  # inside SeriesDescription
    try:
        theirs = dcmread(cut, stop_before_pixels=True)
    except Exception as err:
        with pytest.raises(type(err)):
            read_header(cut)
    else:
        assert differences(read_header(cut), theirs) == []


def test_file_meta(tmp_path: Path) -> None:
    ds = mr_dataset()
    path = write_part10(ds, tmp_path / "one.dcm")
    meta = read_file_meta(path)
    assert (meta.sop_class, meta.sop_instance) == (ds.SOPClassUID, ds.SOPInstanceUID)
    assert meta.transfer_syntax == ExplicitVRLittleEndian
    assert path.read_bytes()[meta.dataset_offset : meta.dataset_offset + 2] == b"\x08\x00"
    (tmp_path / "junk").write_bytes(b"\0" * 300)
    with pytest.raises(ValueError, match="not a DICOM Part 10 file"):
        read_file_meta(tmp_path / "junk")


def test_pydicom_is_still_what_converts_values(tmp_path: Path, fallbacks: Fallbacks) -> None:
    ds = mr_dataset(PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 100")
    path = write_part10(ds, tmp_path / "latin1.dcm")
    ours = scanned(path, fallbacks)
    assert str(ours.PatientName) == "Müller^Jürgen"
    assert ours.EchoTime == pydicom.valuerep.DSfloat(ds.EchoTime)
