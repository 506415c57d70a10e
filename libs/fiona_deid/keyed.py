"""Keyed, deterministic replacements: UIDs and date offsets (and the FIONA preset's digests).

Everything keyed is HMAC-SHA256(key, project NUL purpose NUL value): deterministic for one
project (late series join their study), independent between projects, and not recomputable by
anyone without the key.
"""

import hashlib
import hmac
import uuid
from datetime import date, timedelta

MIN_KEY_BYTES = 16
FIONA_UID_ROOT = "1.3.6.1.4.1.45037."
_DECIMAL = str.maketrans("abcdef", "012345")  # the original folds hex a-f onto 0-5


class KeyedMapper:
    """UID and date-offset mapping for one project and key; caches UIDs seen (a study's UIDs
    repeat in every object)."""

    def __init__(
        self, key: bytes, project: str, legacy_uids: bool = False, cache_limit: int = 100_000
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the de-identification key needs at least {MIN_KEY_BYTES} bytes")
        self._hmac = hmac.new(key, project.encode() + b"\0", hashlib.sha256)
        self._project = project
        self._legacy = legacy_uids
        self._uids: dict[str, str] = {}
        self._cache_limit = cache_limit

    def digest(self, purpose: str, value: str) -> bytes:
        mac = self._hmac.copy()
        mac.update(purpose.encode() + b"\0" + value.encode())
        return mac.digest()

    def uid(self, original: str) -> str:
        """The project's UID for ``original``: ``2.25.<UUID as decimal>`` (≤ 44 characters)."""
        mapped = self._uids.get(original)
        if mapped is None:
            if self._legacy:
                mapped = fiona_uid(original, self._project)
            else:
                mapped = "2.25." + str(
                    uuid.UUID(bytes=self.digest("uid", original)[:16], version=4).int
                )
            if len(self._uids) >= self._cache_limit:
                self._uids.clear()  # bounded memory; entries are cheap to recompute
            self._uids[original] = mapped
        return mapped

    def date_offset_days(self, participant: str | None) -> int:
        """Keyed offset, 1 to 10 years into the past, per project or per participant."""
        value = "" if participant is None else participant
        purpose = "date" if participant is None else "date-participant"
        number = int.from_bytes(self.digest(purpose, value)[:8], "big")
        return -(365 + number % (3653 - 365))

    def short_token(self, purpose: str, value: str, length: int) -> str:
        """A keyed, upper-case hex token, e.g. for cleaned AE titles."""
        return self.digest(purpose, value).hex()[:length].upper()


def fiona_uid(original: str, project: str) -> str:
    """The original FIONA's ``hashuid+PROJECTNAME`` (spec 7.4): continuity with data it sent,
    at the price of being recomputable by anyone who knows the project name."""
    digest = hashlib.sha256((original + project).encode()).hexdigest().translate(_DECIMAL)
    return (FIONA_UID_ROOT + digest)[:63]


def fiona_digest(value: str, max_length: int) -> str:
    """The original's ``hash``/``hashuid``: SHA-256 decimal digest, cut to the VR's length."""
    return hashlib.sha256(value.encode()).hexdigest().translate(_DECIMAL)[:max_length]


def shift_date(value: str, days: int) -> str:
    """Shift ``YYYYMMDD`` (or the date part of a DT) by ``days``; unparsable → empty."""
    try:
        shifted = date(int(value[0:4]), int(value[4:6]), int(value[6:8])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    if len(value) < 8:
        return ""
    return shifted.strftime("%Y%m%d") + value[8:]
