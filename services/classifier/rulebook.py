"""The rule set in force, replaced when its file changes (for series that arrive afterwards)."""

from pathlib import Path

from watchdog.observers.api import BaseObserver

from fiona_common.errors import ConfigError
from fiona_common.watched import WatchedFile
from services.classifier import metrics
from services.classifier.rules import RuleSet


def _count_error(err: ConfigError) -> None:
    metrics.RULE_ERRORS.inc()


class RuleBook:
    """Holds the current :class:`RuleSet`; a broken new file leaves the previous one in force.

    An unchanged file keeps the loaded rules, with the outcomes they remember.
    """

    def __init__(self, path: Path | None) -> None:
        self._default = RuleSet.default()
        self._file: WatchedFile[RuleSet] | None = None
        if path is not None:  # start-up: errors stop it
            source = str(path)
            self._file = WatchedFile(
                path, lambda text: RuleSet.from_json(text, source), "rule file", _count_error
            )

    @property
    def current(self) -> RuleSet:
        return self._file.current if self._file is not None else self._default

    def reload(self) -> bool:
        return self._file.reload() if self._file is not None else False

    def watch(self) -> BaseObserver | None:
        return self._file.watch() if self._file is not None else None
