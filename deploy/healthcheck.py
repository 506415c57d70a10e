"""Container health check: ``GET /healthz`` of the FIONA service this container runs.

Docker runs it inside the container (``HEALTHCHECK`` in deploy/Dockerfile). One image serves
every service, so the service is read from the command line of PID 1 (``fiona run SERVICE``,
optionally with ``--config FILE``) and its HTTP port from FIONA's own settings (environment and
config file), exactly as the service itself reads it. Exit code 0: healthy; 1: not.

    python healthcheck.py [PID]      (default PID 1)
"""

import sys
import urllib.error
import urllib.request
from pathlib import Path


def service_and_config(argv: list[str]) -> tuple[str, Path | None]:
    """The SERVICE of ``... run SERVICE`` in ``argv`` and the ``--config`` file, if any."""
    config = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config = Path(argv[i + 1])
        elif arg.startswith("--config="):
            config = Path(arg.split("=", 1)[1])
    try:
        service = argv[argv.index("run") + 1]
    except (ValueError, IndexError):
        raise SystemExit(f"healthcheck: not a 'fiona run SERVICE' process: {argv}") from None
    return service.replace("-", "_"), config


def command_line(pid: str) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def healthz_url(service: str, config: Path | None) -> str:
    from fiona_common.settings import Settings

    settings = Settings.load(config)
    port = getattr(settings, service).http_port
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{port}/healthz"


def main(args: list[str]) -> int:
    service, config = service_and_config(command_line(args[0] if args else "1"))
    url = healthz_url(service, config)
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            healthy = response.status == 200
    except (urllib.error.URLError, OSError) as err:
        print(f"healthcheck: {service}: {url}: {err}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
