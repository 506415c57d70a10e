"""Parameters of an API request as REDCap (PHP) reads a POSTed form.

Arrays arrive as ``records[0]=a&records[1]=b`` (PyCap) or ``records[]=a``; REDCap also takes a
plain comma-separated ``records=a,b``. Other names are single values. Unknown names are ignored,
which is why a misspelt ``record[0]`` silently selects nothing (REDCap behaves the same).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

_ARRAY_NAME = re.compile(r"(?P<name>[^\[\]]+)\[\d*\]")


@dataclass(frozen=True)
class FormParams:
    values: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> FormParams:
        values: dict[str, str] = {}
        arrays: dict[str, list[str]] = {}
        for name, value in pairs:
            match = _ARRAY_NAME.fullmatch(name)
            if match:
                arrays.setdefault(match["name"], []).append(value)
            else:
                values[name] = value
        return cls(values, arrays)

    @classmethod
    def from_mapping(cls, params: Mapping[str, str]) -> FormParams:
        return cls.from_pairs(params.items())

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.values

    def flag(self, name: str) -> bool:
        """REDCap's reading of a boolean parameter: ``1`` or ``true`` in any case."""
        return self.get(name).strip().lower() in ("1", "true")

    def array(self, name: str) -> list[str]:
        """An array parameter, from ``name[i]`` items or a comma-separated ``name``."""
        if name in self.arrays:
            items = self.arrays[name]
        else:
            items = self.get(name).split(",")
        return [item.strip() for item in items if item.strip()]


def parse_form_body(body: bytes, content_type: str) -> FormParams:
    """Parameters of a urlencoded or multipart/form-data request body."""
    if content_type.lower().startswith("multipart/form-data"):
        return FormParams.from_pairs(_multipart_pairs(body, content_type))
    text = body.decode("utf-8", errors="replace")
    return FormParams.from_pairs(parse_qsl(text, keep_blank_values=True))


def _multipart_pairs(body: bytes, content_type: str) -> list[tuple[str, str]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    pairs: list[tuple[str, str]] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        name = _part_name(part)
        payload = part.get_payload(decode=True)
        if name is not None and isinstance(payload, bytes):
            pairs.append((name, payload.decode(part.get_content_charset() or "utf-8", "replace")))
    return pairs


def _part_name(part: Message) -> str | None:
    name = part.get_param("name", header="content-disposition")
    return name if isinstance(name, str) else None
