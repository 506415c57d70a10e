"""The rule set in force, replaced when its file changes (for series that arrive afterwards)."""

import logging
import os
import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from services.classifier import metrics
from services.classifier.rules import RuleFileError, RuleSet

log = logging.getLogger(__name__)


class RuleBook:
    """Holds the current :class:`RuleSet`; a broken new file leaves the previous one in force."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.current = RuleSet.load(path) if path else RuleSet.default()  # start-up: errors stop
        self._lock = threading.Lock()

    def reload(self) -> bool:
        """Load the file again; False (and the old rules kept) if it is broken."""
        if self.path is None:
            return False
        try:
            rules = RuleSet.load(self.path)
        except (RuleFileError, OSError) as err:
            metrics.RULE_ERRORS.inc()
            log.error("rule file refused, previous rules stay in force", extra={"error": str(err)})
            return False
        with self._lock:
            self.current = rules
        log.info("rule file reloaded", extra={"rules": len(rules.definitions)})
        return True

    def watch(self) -> BaseObserver | None:
        """Reload when the file is written or replaced (editors often write a new file)."""
        if self.path is None:
            return None
        book, name = self, self.path.name

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
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
