"""DIMSE status codes FIONA answers with (PS3.4 Annex B, PS3.7 Annex C)."""

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    PROCESSING_FAILURE = 0x0110


class EchoStatus(IntEnum):
    """C-ECHO response statuses."""

    SUCCESS = 0x0000
