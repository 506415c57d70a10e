"""De-identification throughput: FIONA's engine against dicognito and pydicom/deid, one core.

Generates a corpus of MR images (default 2,000: 20 patients x 4 series x 25 images, 256x256
16-bit, explicit VR little endian, identifying attributes, nested sequences, Siemens private
blocks with CSA-sized binary headers), then times in one process pinned to one CPU:

- ``pydicom``: bare ``dcmread`` + ``save_as`` (the floor: reading and writing alone);
- ``fiona``: ``deidentify`` with the recommended preset (the default), leak guard included,
  writing the checked bytes (plain write: the exporter's fsync is storage, not de-identification);
- ``dicognito``: ``Anonymizer().anonymize(ds)`` + ``save_as`` (pip install dicognito);
- ``deid``: pydicom/deid ``replace_identifiers`` with its default recipe (pip install deid).

    python bench/deid_bench.py [--count 2000] [--corpus-dir DIR] [--tools fiona,dicognito]

Prints objects/s per tool and the ratios against dicognito and the pydicom floor.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from fiona_deid.engine import deidentify
from fiona_deid.records import Outcome
from fiona_deid.settings import build_settings

KEY = b"benchmark key, 32 bytes long...."
ROOT = "1.2.826.0.1.3680043.8.498."


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99LOCAL", meaning
    return item


def mr_image(patient: int, series: int, index: int, study_uid: str, series_uid: str) -> Dataset:
    """One MR slice with the attributes a clinical scanner writes."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid(ROOT)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240117"
    ds.InstanceCreationDate = "20240117"
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime, ds.ContentTime = (
        "101502",
        "1019",
        "1020",
        "1021",
    )
    ds.AccessionNumber = f"ACC{patient:06d}"
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = "Haukeland University Hospital"
    ds.InstitutionAddress = "Jonas Lies vei 65, Bergen"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.StationName = "MRC40512"
    ds.StudyDescription = "MR caput"
    ds.SeriesDescription = f"t1_mprage_{series}"
    ds.InstitutionalDepartmentName = "Radiology"
    ds.PerformingPhysicianName = "Wilson^James"
    ds.OperatorsName = "Tech^Tina"
    ds.ManufacturerModelName = "Prisma"
    ds.ReferencedImageSequence = Sequence([_reference(study_uid) for _ in range(3)])
    ds.ProcedureCodeSequence = Sequence([_code("MRHEAD", "MR head")])
    ds.PatientName = f"Patient{patient:03d}^Given"
    ds.PatientID = f"PID{patient:06d}"
    ds.PatientBirthDate = "19700315"
    ds.PatientSex = "F"
    ds.PatientAge = "054Y"
    ds.PatientSize, ds.PatientWeight = 1.7, 70
    ds.PatientAddress = "Storgata 12, Bergen"
    ds.BodyPartExamined = "HEAD"
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR\\IR", "SK\\SP\\MP", "IR"
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = "*tfl3d1_16ns"
    ds.SliceThickness, ds.RepetitionTime, ds.EchoTime, ds.InversionTime = 1, 2300, 2.98, 900
    ds.NumberOfAverages, ds.ImagingFrequency, ds.ImagedNucleus = 1, 123.2, "1H"
    ds.EchoNumbers, ds.MagneticFieldStrength, ds.SpacingBetweenSlices = 1, 3, 1
    ds.NumberOfPhaseEncodingSteps, ds.EchoTrainLength = 256, 1
    ds.PercentSampling, ds.PercentPhaseFieldOfView, ds.PixelBandwidth = 100, 93.75, 240
    ds.DeviceSerialNumber = "40512"
    ds.SoftwareVersions = "syngo MR XA30"
    ds.ProtocolName = f"t1_mprage_{series}"
    ds.TransmitCoilName = "Body"
    ds.AcquisitionMatrix = [0, 256, 240, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle, ds.SAR, ds.dBdt = 9, 0.05, 0
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyID = "1"
    ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = series, 1, index + 1
    ds.ImagePositionPatient = [-120.0, -130.0, float(index)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = float(index)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 256
    ds.PixelSpacing = [0.9, 0.9]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 600, 1200
    ds.RequestAttributesSequence = Sequence([_request(patient)])
    ds.PerformedProcedureStepStartDate = "20240117"
    ds.PerformedProcedureStepDescription = "MR caput"
    _siemens_private(ds)
    ds.PixelData = (np.arange(256 * 256, dtype=np.uint16) % 4096).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _reference(study_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = MRImageStorage
    item.ReferencedSOPInstanceUID = study_uid + ".5." + str(os.getpid())
    return item


def _request(patient: int) -> Dataset:
    item = Dataset()
    item.RequestedProcedureID = f"RP{patient}"
    item.ScheduledProcedureStepID = f"SPS{patient}"
    item.RequestedProcedureDescription = "MR caput"
    return item


def _siemens_private(ds: Dataset) -> None:
    mr = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    mr.add_new(0x08, "CS", "IMAGE NUM 4")
    mr.add_new(0x0B, "DS", "2300")
    mr.add_new(0x0C, "IS", "0")
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    csa.add_new(0x08, "CS", "IMAGE NUM 4")
    csa.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" + bytes(range(256)) * 40)  # ~10 kB
    csa.add_new(0x18, "CS", "MR")
    csa.add_new(0x20, "OB", b"SV10\x04\x03\x02\x01" + bytes(range(256)) * 80)  # ~20 kB
    other = ds.private_block(0x0051, "SIEMENS MR HEADER", create=True)
    other.add_new(0x0F, "LO", "HC1-7")


def make_corpus(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.dcm"))
    if len(existing) >= count:
        return existing[:count]
    per_series, series_per_study = 25, 4
    paths = []
    for n in range(count):
        patient, rest = divmod(n, per_series * series_per_study)
        series, index = divmod(rest, per_series)
        study_uid = f"{ROOT}7.{patient}"
        ds = mr_image(patient, series + 1, index, study_uid, f"{study_uid}.{series + 1}")
        path = folder / f"{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def time_pydicom(files: list[Path], out: Path) -> None:
    for path in files:
        dcmread(path).save_as(out / path.name, enforce_file_format=True)


def time_fiona(files: list[Path], out: Path) -> None:
    settings = build_settings("BENCH", "recommended")
    for path in files:
        ds = dcmread(path)
        result = deidentify(ds, settings, KEY, "SUBJ" + str(ds.PatientID)[-3:], "baseline")
        if result.outcome is not Outcome.EMITTED or result.encoded is None:
            raise SystemExit(f"fiona: {path.name} {result.outcome}: {result.reason}")
        (out / path.name).write_bytes(result.encoded)


def time_dicognito(files: list[Path], out: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="benchmark")
    for path in files:
        ds = dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / path.name)


def time_deid(files: list[Path], out: Path) -> None:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    recipe = DeidRecipe()  # the package's default recipe
    replace_identifiers(
        dicom_files=[str(p) for p in files], deid=recipe, save=True, output_folder=str(out)
    )


TOOLS: dict[str, Callable[[list[Path], Path], None]] = {
    "pydicom": time_pydicom,
    "fiona": time_fiona,
    "dicognito": time_dicognito,
    "deid": time_deid,
}


def measure(name: str, files: list[Path], scratch: Path) -> float | str:
    out = scratch / name
    out.mkdir()
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TOOLS[name](files, out)
    except ImportError as err:
        return f"not installed ({err.name})"
    elapsed = time.perf_counter() - started
    return len(files) / elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--corpus-dir", type=Path, help="keep and reuse the corpus here")
    parser.add_argument("--tools", default="pydicom,fiona,dicognito,deid")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory(prefix="deid-bench-") as tmp:
        corpus_dir = args.corpus_dir or Path(tmp) / "corpus"
        files = make_corpus(corpus_dir, args.count)
        size = sum(p.stat().st_size for p in files) / len(files) / 1024
        print(f"corpus: {len(files)} MR objects, {size:.0f} kB each, one CPU ({args.cpu})")
        rates: dict[str, float | str] = {}
        for name in args.tools.split(","):
            rates[name] = measure(name, files, Path(tmp))
        _report(rates)
    return 0


def _report(rates: dict[str, float | str]) -> None:
    base = rates.get("dicognito")
    floor = rates.get("pydicom")
    print(f"{'tool':10} {'objects/s':>10} {'x dicognito':>12} {'x pydicom r+w':>14}")
    for name, rate in rates.items():
        if isinstance(rate, str):
            print(f"{name:10} {rate}")
            continue
        vs_base = f"{rate / base:.2f}" if isinstance(base, float) else "-"
        vs_floor = f"{rate / floor:.2f}" if isinstance(floor, float) else "-"
        print(f"{name:10} {rate:10.0f} {vs_base:>12} {vs_floor:>14}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    raise SystemExit(main(sys.argv[1:]))
