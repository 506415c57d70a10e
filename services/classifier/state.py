"""Per-series state shared by every classifier replica, in a JetStream key-value bucket.

Updates are compare-and-set on the entry's revision: two replicas handling two images of one
series at the same moment never lose each other's update, and the same image handled twice
changes nothing (and publishes nothing).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.js.kv import KeyValue

from fiona_common.kvstate import cas_update

BUCKET = "fiona_series"


@dataclass
class SeriesState:
    """What the classifier remembers of a series between images."""

    summary: dict[str, Any] = field(default_factory=dict)
    series_level_failed: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        data = {"summary": self.summary, "series_level_failed": self.series_level_failed}
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "SeriesState":
        raw = json.loads(data)
        return cls(raw.get("summary", {}), raw.get("series_level_failed", []))


def series_key(site: str, series_uid: str) -> str:
    return f"{site}.{series_uid}"


async def advance(
    kv: KeyValue, key: str, step: Callable[[SeriesState | None], SeriesState]
) -> tuple[SeriesState, int] | None:
    """Apply ``step`` to the stored state until the write wins; None if nothing changed.

    ``step`` is called again after a conflict, with the state another replica just wrote, so it
    must only compute (any counting it does is then done again, after the other write).
    """

    def encoded_step(current: bytes | None) -> bytes:
        return step(SeriesState.decode(current) if current is not None else None).encode()

    result = await cas_update(kv, key, encoded_step)
    return None if result is None else (SeriesState.decode(result[0]), result[1])
