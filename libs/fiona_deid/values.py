"""Replacement values: dummies by VR (action D), free-text cleaning (action C), body parts."""

import re
from functools import lru_cache

# D: "a non-zero length value that may be a dummy value and consistent with the VR".
DUMMY_BY_VR: dict[str, object] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "http://anonymized.invalid",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
    "OB": b"\0\0",
    "OW": b"\0\0",
    "UN": b"\0\0",
}
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240}

# Dates written in text: 20240131, 2024-01-31, 2024.01.31, 31.01.2024, 31/01/2024.
_DATE_IN_TEXT = (
    r"(?:19|20)\d\d[-./]?(?:0[1-9]|1[0-2])[-./]?(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[./-](?:0?[1-9]|1[0-2])[./-](?:19|20)\d\d"
)


@lru_cache(maxsize=64)
def _scrubber(identifiers: tuple[str, ...]) -> re.Pattern[str]:
    words = "|".join(re.escape(i) for i in identifiers)
    pattern = rf"\b(?:{_DATE_IN_TEXT})\b" + (rf"|\b(?:{words})\b" if words else "")
    return re.compile(pattern, re.IGNORECASE)


def clean_text(text: str, identifiers: tuple[str, ...]) -> str:
    """Free text without the object's identifying values or dates written in it.

    This is the "clean" of Clean Descriptors / Structured Content / Graphics for text: what a
    machine can know to be identifying is removed; the rest of the description stays useful.
    """
    return re.sub(r"\s{2,}", " ", _scrubber(identifiers).sub("", text)).strip()


def limited(value: str, vr: str) -> str:
    """``value`` cut to the VR's maximum length."""
    limit = MAX_LENGTH.get(vr)
    return value[:limit] if limit else value


# Body Part Examined values kept by the FIONA preset (the original keeps CID 4031 codes and
# writes BODYPART otherwise); the common part of the list.
KNOWN_BODY_PARTS = frozenset(
    """ABDOMEN ABDOMENPELVIS ANKLE AORTA ARM AXILLA BACK BLADDER BRAIN BREAST BRONCHUS
    BUTTOCK CALF CAROTID CEREBELLUM CERVIX CHEST CHESTABDOMEN CHESTABDPELVIS CLAVICLE COCCYX
    COLON CSPINE CTSPINE EAR ELBOW ESOPHAGUS EXTREMITY EYE FACE FINGER FOOT FOREARM
    GALLBLADDER HAND HEAD HEADNECK HEART HIP HUMERUS IAC JAW KIDNEY KNEE LARYNX LEG LIVER
    LSPINE LSSPINE LUNG MEDIASTINUM NECK ORBIT OVARY PANCREAS PAROTID PELVIS PROSTATE RECTUM
    RIB SACRUM SCAPULA SHOULDER SINUS SKULL SPINE SPLEEN STERNUM STOMACH TESTIS THIGH
    THORAX THUMB THYROID TIBIA TLSPINE TOE TONGUE TRACHEA TSPINE UTERUS WHOLEBODY WRIST""".split()
)
