"""AutoID: a random pseudonym per patient and project, the same one on every later study.

The pseudonym is drawn at random (operating-system randomness) from the project's participant
pattern, so nothing about the patient can be recomputed from it; uniqueness within the project
is claimed in the key-value bucket. The lookup key of a returning patient is the keyed hash of
the clinical PatientID (the key is a secret file), never the ID itself.
"""

import hashlib
import random
import re

import rstr
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from fiona_common.errors import FionaError

BUCKET = "fiona_autoid"
MAX_DRAWS = 200
_RANDOM = rstr.Rstr(random.SystemRandom())


class PatternExhausted(FionaError):
    """No unused pseudonym could be drawn (a pattern with too few possible IDs)."""


def draw(pattern: str) -> str:
    """One random string that fully matches ``pattern``."""
    for _ in range(20):
        candidate = _RANDOM.xeger(pattern)
        if re.fullmatch(pattern, candidate):
            return candidate
    raise PatternExhausted(f"pattern {pattern!r} does not yield matching IDs")


def _short(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:40]


async def pseudonym_for(kv: KeyValue, project: str, pattern: str, patient_key: str) -> str:
    """The patient's pseudonym in ``project``: the one given before, or a new unique one."""
    mapping = f"patient.{project}.{_short(patient_key)}"
    try:
        entry = await kv.get(mapping)
        if entry.value:
            return entry.value.decode()
    except KeyNotFoundError:
        pass
    for _ in range(MAX_DRAWS):
        candidate = draw(pattern)
        try:
            await kv.create(f"used.{project}.{_short(candidate)}", b"1")
        except KeyWrongLastSequenceError:
            continue  # given to someone else already: draw again
        try:
            await kv.create(mapping, candidate.encode())
            return candidate
        except KeyWrongLastSequenceError:
            # Another replica gave this patient a pseudonym at the same moment: use that one
            # (the drawn one stays claimed, unused).
            entry = await kv.get(mapping)
            return (entry.value or b"").decode()
    raise PatternExhausted(f"project {project}: no unused ID left after {MAX_DRAWS} draws")


async def adopt(kv: KeyValue, project: str, patient_key: str, pseudonym: str) -> bool:
    """Take a mapping from REDCap's AutoID project; True if it was new or different here.

    REDCap is the record: a mapping corrected there replaces the one kept here.
    """
    mapping = f"patient.{project}.{_short(patient_key)}"
    try:
        entry = await kv.get(mapping)
        if entry.value == pseudonym.encode():
            return False
    except KeyNotFoundError:
        pass
    await kv.put(f"used.{project}.{_short(pseudonym)}", b"1")
    await kv.put(mapping, pseudonym.encode())
    return True
