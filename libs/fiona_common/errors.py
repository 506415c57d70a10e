"""The one exception tree of FIONA.

FionaError
 ├── BadInput      the input itself is wrong: never retried; quarantine it with a reason
 ├── Unavailable   something we depend on is down (NATS, PACS, REDCap, disk): retry later
 └── ConfigError   the configuration is wrong: one line on stderr at start-up, exit code 2
"""


class FionaError(Exception):
    """Base of every error FIONA raises on purpose."""


class BadInput(FionaError):
    """The object or message can never be processed as it is.

    ``code`` is a short, stable, machine-readable reason (it ends up in reason files and metric
    labels); the message is for humans and must not contain patient identifiers.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Unavailable(FionaError):
    """A dependency is down or full; the same work may succeed later."""


class Later(FionaError):
    """The message is handled for now but must come back after ``seconds`` (a durable timer:
    the bus holds it unacknowledged and redelivers it then)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"again in {seconds:.0f} s")
        self.seconds = seconds


class ConfigError(FionaError):
    """Configuration is missing or invalid."""
