"""A configuration file kept loaded: replaced when the file changes, kept when the change is bad.

Used for files admins edit while FIONA runs (the classifier's rule file, the project list): a
new version takes effect for work that starts afterwards; a broken one is refused with its
error logged (and counted by the caller's ``on_error``), and the previous version stays.
"""

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from fiona_common.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Watchdog event types that can mean new content (not "opened", "closed_no_write": reacting to
# those, our own reads of the file would trigger reloads forever).
_WRITES = frozenset({"created", "modified", "moved", "closed"})


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} cannot be read: {err}") from None


class WatchedFile(Generic[T]):
    """``current``: ``parse(text)`` of the file's latest good version.

    ``parse`` raises :class:`ConfigError` (or a subclass) for a file it refuses. At start the
    error propagates: a broken file stops start-up.
    """

    def __init__(
        self,
        path: Path,
        parse: Callable[[str], T],
        what: str,
        on_error: Callable[[ConfigError], None] | None = None,
    ) -> None:
        self.path, self.parse, self.what, self.on_error = path, parse, what, on_error
        self._text = read_text(path)
        self.current: T = parse(self._text)
        self._lock = threading.Lock()

    def reload(self) -> bool:
        """Load the file again if its text changed; False if it did not or is refused."""
        try:
            text = read_text(self.path)
            if text == self._text:
                return False
            value = self.parse(text)
        except ConfigError as err:
            if self.on_error is not None:
                self.on_error(err)
            log.error(
                f"{self.what} refused, the previous one stays in force", extra={"error": str(err)}
            )
            return False
        with self._lock:
            self.current, self._text = value, text
        log.info(f"{self.what} reloaded")
        return True

    def watch(self) -> BaseObserver:
        """Reload when the file is written or replaced (editors often write a new file)."""
        watched, name = self, self.path.name

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in _WRITES:
                    return
                touched = {
                    os.fsdecode(event.src_path),
                    os.fsdecode(getattr(event, "dest_path", "")),
                }
                if any(Path(p).name == name for p in touched if p):
                    watched.reload()

        observer = Observer()
        observer.schedule(Handler(), os.fspath(self.path.parent), recursive=False)
        observer.start()
        return observer
