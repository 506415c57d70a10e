"""The disk reserve: objects are refused before the data disk is completely full.

A C-STORE arriving while free space is below the reserve is answered "out of resources" before
one byte of it is written, so the disk never fills up under the receiver, and what is stored
(and the local NATS store, logs, the exporter's staging) keeps room to work. Senders retry
later; the janitor (``fiona janitor``) frees space long before this point (high water 85 %).
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class DiskReserve:
    """Free space that C-STOREs must leave on the file system of ``path``."""

    path: Path  # anything on the archive's file system (its .incoming folder)
    min_free_bytes: int = 0
    min_free_percent: float = 0.0
    _short: bool = field(default=False, init=False)

    @property
    def active(self) -> bool:
        return self.min_free_bytes > 0 or self.min_free_percent > 0

    def has_room(self) -> bool:
        """True while free space is at or above the reserve (one statvfs: ~1 µs, per object)."""
        if not self.active:
            return True
        try:
            fs = os.statvfs(self.path)
        except OSError:  # cannot tell: let the write itself find out
            return True
        free = fs.f_bavail * fs.f_frsize
        needed = max(self.min_free_bytes, fs.f_blocks * fs.f_frsize * self.min_free_percent / 100)
        short = free < needed
        if short != self._short:  # logged once per change, not once per refused object
            self._short = short
            if short:
                log.warning(
                    "disk reserve reached: refusing objects",
                    extra={"free_bytes": free, "reserve_bytes": int(needed)},
                )
            else:
                log.info("disk reserve clear: accepting objects", extra={"free_bytes": free})
        return not short
