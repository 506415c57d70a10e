"""DICOM test data: synthetic MR objects built with pydicom, and pydicom's shipped files.

Nothing is read from outside the test's own tmp dir and the installed pydicom package.
"""

from __future__ import annotations

import functools
import os
import struct
import warnings
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from fiona_common.messages import InstanceStored, StoredVia

UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def new_uid() -> str:
    """A fresh, globally unique DICOM UID."""
    return str(generate_uid())


def mr_dataset(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_id: str = "PAT001",
    rows: int = 64,
    cols: int = 64,
    modality: str = "MR",
    instance_number: int = 1,
    **extra: Any,
) -> Dataset:
    """A valid MR Image Storage object (explicit VR LE, with file meta), 16-bit pixels.

    Missing UIDs are generated. ``extra`` sets or overrides any attribute by keyword
    (``PatientName="X^Y"``, ``EchoTime=90``); a value of ``None`` removes the attribute,
    e.g. ``StudyInstanceUID=None`` for an invalid object. Pixel values are a gradient
    that also depends on ``instance_number``, so no two instances share pixel data.
    The dataset has no sequences, so DCMTK re-encodes it byte for byte.
    """
    sop_uid = sop_uid or new_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(MRImageStorage, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240315"
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101530.000000"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = modality
    ds.Manufacturer = "FIONA Test"
    ds.InstitutionName = "Test Hospital"
    ds.ReferringPhysicianName = "Welby^Marcus"
    ds.StationName = "MR01"
    ds.StudyDescription = "Brain MRI"
    ds.SeriesDescription = "T2 TSE axial"
    ds.ManufacturerModelName = "Synthetic"
    ds.PatientName = "Roe^Richard"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = "5.0"
    ds.RepetitionTime = "4000.0"
    ds.EchoTime = "90.0"
    ds.NumberOfAverages = "1.0"
    ds.ImagingFrequency = "123.2"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "3.0"
    ds.SpacingBetweenSlices = "5.0"
    ds.EchoTrainLength = "16"
    ds.ProtocolName = "t2_tse_tra"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid or new_uid()
    ds.SeriesInstanceUID = series_uid or new_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = "1"
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = str(instance_number)
    ds.ImagePositionPatient = ["-120.0", "-120.0", f"{5.0 * instance_number:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = new_uid()
    ds.ImagesInAcquisition = "1"
    ds.SliceLocation = f"{5.0 * instance_number:.1f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = ["0.9375", "0.9375"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "600"
    ds.WindowWidth = "1600"
    ds.PixelData = _gradient_pixels(rows, cols, instance_number)
    for keyword, value in extra.items():
        _set_attribute(ds, keyword, value)
    return ds


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _gradient_pixels(rows: int, cols: int, seed: int) -> bytes:
    """12-bit little-endian pixel values that vary by position and ``seed``."""
    values = [(r * 37 + c * 11 + seed * 101) % 4096 for r in range(rows) for c in range(cols)]
    return struct.pack(f"<{len(values)}H", *values)


def _set_attribute(ds: Dataset, keyword: str, value: Any) -> None:
    if tag_for_keyword(keyword) is None:
        raise ValueError(f"not a DICOM keyword: {keyword}")
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    setattr(ds, keyword, value)
    if keyword == "SOPInstanceUID":
        ds.file_meta.MediaStorageSOPInstanceUID = value
    elif keyword == "SOPClassUID":
        ds.file_meta.MediaStorageSOPClassUID = value


def write_part10(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as a DICOM Part 10 file (preamble + file meta); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    directory: str | os.PathLike[str],
    n: int,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    **kw: Any,
) -> list[Path]:
    """Write ``n`` MR instances of one study/series as ``IMG0001.dcm``... into ``directory``.

    ``kw`` goes to ``mr_dataset`` for every instance (not ``sop_uid``/``instance_number``).
    """
    study_uid = study_uid or new_uid()
    series_uid = series_uid or new_uid()
    kw.setdefault("FrameOfReferenceUID", new_uid())
    kw.setdefault("ImagesInAcquisition", str(n))
    return [
        write_part10(
            mr_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i, **kw),
            Path(directory) / f"IMG{i:04d}.dcm",
        )
        for i in range(1, n + 1)
    ]


def dataset_bytes(path: str | os.PathLike[str], *, inflate: bool = False) -> bytes:
    """The raw encoded dataset of a Part 10 file: everything after the File Meta group.

    No decoding or re-encoding, so two files with equal ``dataset_bytes`` carry the same
    dataset bit for bit. For Deflated Explicit VR LE the raw bytes are a zlib stream
    whose bytes depend on the compressor; ``inflate=True`` returns the inflated dataset.
    """
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        raw = fp.read()
    if inflate and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return zlib.decompress(raw, -zlib.MAX_WBITS)
    return raw


# --------------------------------------------------------------------------- pydicom test files

# Among several shipped files of one transfer syntax prefer these: they are already in
# the encoding DCMTK sends (storescu delivers their dataset bytes unchanged) and, where
# possible, do not share a SOP Instance UID with another selected file.
_PREFERRED = (
    "SC_rgb_jpeg_dcmd.dcm",
    "examples_overlay.dcm",
    "ExplVR_BigEnd.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "GDCMJ2K_TextGBR.dcm",
    "SC_rgb_rle.dcm",
)


def pydicom_test_files_dir() -> Path:
    """Directory of the test files installed with pydicom."""
    return Path(pydicom.data.__file__).parent / "test_files"


@functools.cache
def _shipped_by_transfer_syntax(require_uids: bool) -> dict[str, Path]:
    by_syntax: dict[str, Path] = {}
    paths = sorted(pydicom_test_files_dir().glob("*.dcm"))
    paths.sort(key=lambda p: p.name not in _PREFERRED)  # stable: preferred first
    for path in paths:
        syntax = _usable_transfer_syntax(path, require_uids)
        if syntax is not None:
            by_syntax.setdefault(syntax, path)
    return by_syntax


def _usable_transfer_syntax(path: Path, require_uids: bool) -> str | None:
    """The file's transfer syntax, or None if it is unreadable or lacks required UIDs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None
    syntax = ds.file_meta.get("TransferSyntaxUID")
    keywords = UID_KEYWORDS if require_uids else UID_KEYWORDS[2:]
    if not syntax or not all(UID(ds.get(k) or "").is_valid for k in keywords):
        return None
    return str(syntax)


def testdata_files_by_transfer_syntax() -> dict[str, Path]:
    """One pydicom-shipped file per transfer syntax UID (only files with valid UIDs).

    Covers implicit/explicit VR LE, explicit VR BE, deflated, JPEG baseline, extended and
    lossless SV1, JPEG-LS lossless, JPEG 2000 lossless and lossy, RLE. JPEG-LS
    near-lossless is missing because pydicom's files of that syntax have no Study/Series
    UIDs (``canonical_testdata_files`` covers it). Only the files installed with pydicom
    are scanned: ``pydicom.data.get_testdata_files`` would also try to download more
    (~16 s without network). Files are shipped as-is: some use encodings DCMTK
    normalises when sending (undefined lengths, OW encapsulated pixel data...), and
    SOP Instance UIDs repeat: the JPEG extended and JPEG-LS lossless files are both
    pydicom's MR_small instance, the JPEG lossless and RLE files one SC instance. A
    receiver that keys on SOP Instance UID sees those as one instance; use
    ``canonical_testdata_files`` (fresh UIDs) to send them all to one receiver.
    """
    return dict(_shipped_by_transfer_syntax(True))


testdata_files_by_transfer_syntax.__test__ = False  # type: ignore[attr-defined]  # not a test


def canonical_copy(
    src: str | os.PathLike[str], dst_dir: str | os.PathLike[str], *, fresh_uids: bool = True
) -> Path:
    """Re-encode ``src`` into ``dst_dir`` in canonical form, keeping its transfer syntax.

    Canonical: explicit-length sequences and items, OB for encapsulated Pixel Data, no
    group length or trailing padding elements. With ``fresh_uids`` (default) the copy gets
    new Study/Series/SOP Instance UIDs, so copies of files sharing UIDs stay distinct
    instances; otherwise only missing Study/Series UIDs are added. Pixel data (compressed
    fragments too) is not touched. DCMTK's storescu sends such a file's dataset byte for
    byte (deflated included), so byte equality after a network round trip is a valid
    assertion.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = False
            for item in elem.value:
                item.is_undefined_length_sequence_item = False
    if ds.file_meta.TransferSyntaxUID.is_encapsulated and "PixelData" in ds:
        ds["PixelData"].VR = "OB"
    for tag in [t for t in ds.keys() if t.element == 0 or t == 0xFFFCFFFC]:
        del ds[tag]
    for keyword in UID_KEYWORDS:
        if fresh_uids or keyword not in ds:
            _set_attribute(ds, keyword, new_uid())
    return write_part10(ds, Path(dst_dir) / Path(src).name)


def canonical_testdata_files(dst_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """``canonical_copy`` of one pydicom test file per transfer syntax, into ``dst_dir``.

    Like ``testdata_files_by_transfer_syntax`` plus JPEG-LS near-lossless (pydicom's
    files of it lack Study/Series UIDs): 12 transfer syntaxes, every file a distinct
    instance with fresh UIDs.
    """
    return {
        syntax: canonical_copy(path, dst_dir)
        for syntax, path in _shipped_by_transfer_syntax(False).items()
    }


def instance_stored(sop_uid: str, received_at: datetime | None = None) -> InstanceStored:
    """A valid "instance stored" event for ``sop_uid`` in study 1.2.3 (for bus-level tests)."""
    return InstanceStored(
        site="default",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid=sop_uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="MR",
        archive_path=f"site/archive/scp_1.2.3/MR.{sop_uid}",
        size_bytes=10,
        calling_aet="A",
        called_aet="FIONA",
        peer_address="127.0.0.1",
        via=StoredVia.DICOM,
        received_at=received_at or datetime.now(UTC),
    )
