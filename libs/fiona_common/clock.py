"""The time services decide by (one place, so tests can hand services a clock of their own)."""

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
