"""Datasets for the de-identification tests, built with pydicom (no files from outside)."""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

KEY = b"0123456789abcdef-test-key"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1001.1"
SOP_UID = "1.2.826.0.1.3680043.8.498.1001.1.1"
FRAME_UID = "1.2.826.0.1.3680043.8.498.1001.9"
REFERENCED_UID = "1.2.826.0.1.3680043.8.498.1001.1.7"


def code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "99TEST"
    item.CodeMeaning = meaning
    return item


def make_mr(
    sop_uid: str = SOP_UID, series_uid: str = SERIES_UID, sop_class: str = MRImageStorage
) -> Dataset:
    """An MR image with identifying attributes, nested sequences and Siemens-style privates."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = FRAME_UID
    ds.Modality = "MR"
    ds.PatientName = "Doe^Johnathan"
    ds.PatientID = "PID445566"
    ds.PatientBirthDate = "19700315"
    ds.PatientSex = "M"
    ds.PatientAge = "054Y"
    ds.PatientWeight = 80
    ds.PatientAddress = "Storgata 12, Bergen"
    ds.OtherPatientIDs = "OTHER778899"
    ds.AccessionNumber = "ACC20240101"
    ds.InstitutionName = "Haukeland University Hospital"
    ds.InstitutionAddress = "Jonas Lies vei 65"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.OperatorsName = "Tech^Tina"
    ds.StationName = "MRC12345"
    ds.Manufacturer = "SIEMENS"
    ds.DeviceSerialNumber = "SN-998877"
    ds.StudyDate = "20240117"
    ds.SeriesDate = "20240117"
    ds.AcquisitionDate = "20240117"
    ds.ContentDate = "20240117"
    ds.StudyTime = "101502"
    ds.SeriesTime = "101900"
    ds.AcquisitionDateTime = "20240117101900.123456"
    ds.StudyDescription = "MR brain Doe 2024-01-17"
    ds.SeriesDescription = "t1_mprage"
    ds.ProtocolName = "t1_mprage"
    ds.ImageComments = "patient Johnathan moved"
    ds.StudyID = "S1234"
    ds.BodyPartExamined = "BRAIN"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"

    referenced = Dataset()
    referenced.ReferencedSOPClassUID = MRImageStorage
    referenced.ReferencedSOPInstanceUID = REFERENCED_UID
    ds.ReferencedImageSequence = Sequence([referenced])

    performer = Dataset()
    performer.PersonName = "Nurse^Nancy"
    performer.InstitutionName = "Haukeland University Hospital"
    inner = Dataset()
    inner.ObservationDateTime = "20240117102000"
    inner.PersonName = "Doe^Johnathan"
    inner.TextValue = "seen by Doe on 2024-01-17"
    performer.ContentSequence = Sequence([inner])
    ds.ContentSequence = Sequence([performer])

    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01 bvalue 1000 ")
    block.add_new(0x20, "OB", b"SV10 series header")
    other = ds.private_block(0x0011, "ACME HOSPITAL", create=True)
    other.add_new(0x01, "LO", "some private value")

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "SCANNER_AE"
    return ds
