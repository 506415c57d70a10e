"""``fiona redcap emulator``: run the REDCap API emulator for a demo or a manual test."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from redcap_emulator.emulator import Emulator
from redcap_emulator.server import EmulatorServer
from redcap_emulator.store import PRIVATE_FILE_MODE, make_private_dir
from redcap_emulator.tokens import is_token_shaped

log = logging.getLogger(__name__)

DEFAULT_DB = Path("data/state/redcap-emulator.sqlite3")
DEFAULT_PORT = 8085


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiona redcap emulator",
        description="Serve a REDCap API emulator (POST /api/) backed by a SQLite file.",
    )
    parser.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help=f"database (default {DEFAULT_DB})"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM) to serve HTTPS")
    parser.add_argument("--tls-key", type=Path, help="private key (PEM) of --tls-cert")
    parser.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="NAME",
        help="a classic project to create if missing (repeatable)",
    )
    parser.add_argument(
        "--longitudinal",
        action="append",
        default=[],
        metavar="NAME",
        help="a longitudinal project (event event_1_arm_1) to create if missing (repeatable)",
    )
    parser.add_argument(
        "--tokens-dir",
        type=Path,
        metavar="DIR",
        help="write each project's API token to DIR/NAME (mode 0600), kept across restarts",
    )
    return parser


def main(argv: list[str]) -> int:
    """Run until SIGINT or SIGTERM; 0 on a clean stop, 2 on a configuration error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    problem = _configuration_problem(args)
    if problem:
        print(f"redcap emulator: {problem}", file=sys.stderr)
        return 2
    emulator = Emulator(args.db)
    for name in args.project:
        _prepare_project(emulator, name, False, args.tokens_dir)
    for name in args.longitudinal:
        _prepare_project(emulator, name, True, args.tokens_dir)
    server = EmulatorServer(emulator, args.host, args.port, args.tls_cert, args.tls_key)
    try:
        server.start()
    except (OSError, ValueError) as err:
        print(f"redcap emulator: cannot serve on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    log.info("REDCap emulator serving %s (database %s)", server.url, args.db)
    _wait_for_stop_signal()
    log.info("stopping")
    server.stop()
    return 0


def _configuration_problem(args: argparse.Namespace) -> str | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        return "--tls-cert and --tls-key go together"
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            return f"{path} is not a file"
    for name in [*args.project, *args.longitudinal]:
        if not name or "/" in name or name.startswith(".") or name != name.strip():
            return f"{name!r} cannot be a project name (it names the token file)"
    return None


def _prepare_project(
    emulator: Emulator, name: str, longitudinal: bool, tokens_dir: Path | None
) -> None:
    """Create the project if missing and give it a full-rights token, reused on restarts."""
    project_id = emulator.find_project(name)
    if project_id is None:
        project_id = emulator.create_project(name, longitudinal=longitudinal)
        log.info(
            "created %s project %r (id %d)",
            "longitudinal" if longitudinal else "classic",
            name,
            project_id,
        )
    token_file = tokens_dir / name if tokens_dir else None
    grants = emulator.tokens(project_id)
    if grants:
        token = grants[0].token
    else:
        token = emulator.add_token(project_id, token=_reusable_token(emulator, token_file))
    if token_file is not None:
        _write_token_file(token_file, token)
        log.info("token of %r in %s", name, token_file)


def _reusable_token(emulator: Emulator, token_file: Path | None) -> str | None:
    """The token already in the file (after the database was reset), if it is free to reuse."""
    if token_file is None or not token_file.is_file():
        return None
    text = token_file.read_text().strip()
    with emulator.store.reading() as conn:
        taken = conn.execute("SELECT 1 FROM tokens WHERE token = ?", (text,)).fetchone()
    return text if is_token_shaped(text) and not taken else None


def _write_token_file(path: Path, token: str) -> None:
    make_private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)  # also when the file existed already
        handle.write(token + "\n")


def _wait_for_stop_signal() -> None:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(timeout=1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
