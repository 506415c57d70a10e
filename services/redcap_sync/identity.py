"""Keyed hashes of patient identifiers: stable lookup keys nobody can recompute without the key.

The key is a secret file (``REDCAP_SYNC.KEY_FILE``). When none is configured FIONA keeps one in
``<DATADIR>/state/secrets/identity.key``, created once with mode 0600; back it up with the
state, or AutoID can no longer find a returning patient's pseudonym.
"""

import hashlib
import hmac
from pathlib import Path

from fiona_common.errors import ConfigError
from fiona_common.secret_files import read_key


class Identity:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ConfigError("the identity key must be at least 16 bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: Path, create: bool = False) -> "Identity":
        return cls(read_key(path, create))

    def hash(self, kind: str, value: str) -> str:
        """Hex HMAC-SHA256 of ``kind:value`` (kind keeps a PatientID from hashing like a name)."""
        message = f"{kind}:{value.strip()}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
