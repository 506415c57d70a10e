"""Secrets kept in files (keys, tokens): read them, or create a key once with mode 0600."""

import os
import secrets
from pathlib import Path

from fiona_common.errors import ConfigError
from fiona_common.layout import DIR_MODE

KEY_BYTES = 32


def read_key(path: Path, create: bool = False) -> bytes:
    """The key in ``path``; with ``create``, a new random one is written there first if absent."""
    if create and not path.exists():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_hex(KEY_BYTES).encode())
    return read_secret(path, "key")


def read_secret(path: Path, what: str, min_length: int = 16) -> bytes:
    """A secret (key, token) from ``path``, surrounding whitespace removed; refused when short."""
    try:
        secret = path.read_bytes().strip()
    except OSError as err:
        raise ConfigError(f"{what} file {path} cannot be read: {err}") from None
    if len(secret) < min_length:
        raise ConfigError(f"the {what} in {path} is shorter than {min_length} characters")
    return secret
