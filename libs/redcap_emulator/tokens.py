"""API tokens and the rights that come with them."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_TOKEN_SHAPE = re.compile(r"[0-9A-F]{32}")


@dataclass(frozen=True)
class TokenGrant:
    """What a token may do in its project (REDCap's API export/import, delete and design rights)."""

    token: str
    project_id: int
    can_export: bool = True
    can_import: bool = True
    can_delete: bool = True
    can_design: bool = True


def new_token() -> str:
    """A fresh token shaped like REDCap's: 32 upper-case hexadecimal characters."""
    return secrets.token_hex(16).upper()


def is_token_shaped(text: str) -> bool:
    return _TOKEN_SHAPE.fullmatch(text) is not None
