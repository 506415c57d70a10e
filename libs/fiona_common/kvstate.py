"""Compare-and-set updates of JetStream key-value entries, shared by replicas of a service.

Several replicas may update one entry at the same moment; each update reads the entry, computes
the new value from it and writes it only if nobody wrote in between (the entry's revision is
unchanged). The loser computes again from the winner's value, so no update is lost.
"""

from collections.abc import Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from fiona_common.errors import Unavailable

MAX_ATTEMPTS = 50

# The current value (None: no entry) -> the new value, or None to leave the entry as it is.
Step = Callable[[bytes | None], bytes | None]


async def cas_update(kv: KeyValue, key: str, step: Step) -> tuple[bytes, int] | None:
    """Apply ``step`` to the entry until the write wins; the new value and revision, or None.

    ``step`` runs again after a conflict, with the value another replica just wrote, so it must
    only compute (anything it counts is counted again, from the newer value).
    """
    for _ in range(MAX_ATTEMPTS):
        try:
            entry = await kv.get(key)
            current, revision = entry.value, entry.revision
        except KeyNotFoundError:
            current, revision = None, None
        new = step(current)
        if new is None or new == current:
            return None
        try:
            if revision is None:
                return new, await kv.create(key, new)
            return new, await kv.update(key, new, last=revision)
        except KeyWrongLastSequenceError:
            continue  # another replica won this round: compute again from its value
    raise Unavailable(f"key {key}: no update won in {MAX_ATTEMPTS} attempts")
