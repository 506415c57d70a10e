"""The rule set in force, replaced when its file changes (for series that arrive afterwards)."""

import logging
import os
import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from services.classifier import metrics
from services.classifier.rules import RuleFileError, RuleSet, read_rule_file

log = logging.getLogger(__name__)


# Watchdog event types that can mean new content (not "opened", "closed_no_write"...).
_WRITES = frozenset({"created", "modified", "moved", "closed"})


class RuleBook:
    """Holds the current :class:`RuleSet`; a broken new file leaves the previous one in force."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._text = read_rule_file(path, str(path)) if path else None
        if path is None:
            self.current = RuleSet.default()
        else:  # start-up: errors stop it
            self.current = RuleSet.from_json(self._text or "", source=str(path))
        self._lock = threading.Lock()

    def reload(self) -> bool:
        """Load the file again if its text changed; False if it did not or is broken.

        An unchanged file keeps the loaded rules, with the outcomes they remember.
        """
        if self.path is None:
            return False
        try:
            text = read_rule_file(self.path, str(self.path))
            if text == self._text:
                return False
            rules = RuleSet.from_json(text, source=str(self.path))
        except RuleFileError as err:
            metrics.RULE_ERRORS.inc()
            log.error("rule file refused, previous rules stay in force", extra={"error": str(err)})
            return False
        with self._lock:
            self.current, self._text = rules, text
        log.info("rule file reloaded", extra={"rules": len(rules.definitions)})
        return True

    def watch(self) -> BaseObserver | None:
        """Reload when the file is written or replaced (editors often write a new file)."""
        if self.path is None:
            return None
        book, name = self, self.path.name

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in _WRITES:
                    return  # opened/closed-without-write: our own reads would loop forever
                touched = {
                    os.fsdecode(event.src_path),
                    os.fsdecode(getattr(event, "dest_path", "")),
                }
                if any(Path(p).name == name for p in touched if p):
                    book.reload()

        observer = Observer()
        observer.schedule(Handler(), os.fspath(self.path.parent), recursive=False)
        observer.start()
        return observer
