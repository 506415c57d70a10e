"""Keyed hashes of patient identifiers: stable lookup keys nobody can recompute without the key.

The key is a secret file (``REDCAP_SYNC.KEY_FILE``). When none is configured FIONA keeps one in
``<DATADIR>/state/secrets/identity.key``, created once with mode 0600; back it up with the
state, or AutoID can no longer find a returning patient's pseudonym.
"""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from fiona_common.errors import ConfigError
from fiona_common.layout import DIR_MODE

KEY_BYTES = 32


class Identity:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ConfigError("the identity key must be at least 16 bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: Path, create: bool = False) -> "Identity":
        if create and not path.exists():
            path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_hex(KEY_BYTES).encode())
        try:
            return cls(path.read_bytes().strip())
        except OSError as err:
            raise ConfigError(f"identity key file {path} cannot be read: {err}") from None

    def hash(self, kind: str, value: str) -> str:
        """Hex HMAC-SHA256 of ``kind:value`` (kind keeps a PatientID from hashing like a name)."""
        message = f"{kind}:{value.strip()}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
