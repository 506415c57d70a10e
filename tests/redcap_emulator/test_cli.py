"""The command line: projects and token files, one log line per request, clean stop."""

from __future__ import annotations

import queue
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import redcap

from redcap_emulator.cli import main

_RUN = "import sys; from redcap_emulator.cli import main; sys.exit(main(sys.argv[1:]))"
_SERVING = re.compile(r"serving (https?://\S+/api/)")


class RunningCli:
    """``fiona redcap emulator`` in a child process; its stderr lines collected as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _RUN, *args], stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: re.Pattern[str], seconds: float = 20) -> re.Match[str]:
        while True:
            line = self.lines.get(timeout=seconds)
            self.seen.append(line)
            if match := pattern.search(line):
                return match

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=20)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


def test_cli_serves_projects_with_private_reused_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    args = [
        "--db",
        str(tmp_path / "db.sqlite3"),
        "--port",
        "0",
        "--tokens-dir",
        str(tokens),
        "--project",
        "AutoID",
        "--longitudinal",
        "PROJ",
    ]
    cli = RunningCli(*args)
    url = cli.wait_for(_SERVING)[1]
    token = (tokens / "AutoID").read_text().strip()
    autoid = redcap.Project(url, token)
    autoid.import_records([{"record_id": autoid.generate_next_record_name()}])
    is_longitudinal = redcap.Project(url, (tokens / "PROJ").read_text().strip()).is_longitudinal
    first_stop = cli.stop()

    again = RunningCli(*args)
    url = again.wait_for(_SERVING)[1]
    rows = redcap.Project(url, (tokens / "AutoID").read_text().strip()).export_records()
    second_stop = again.stop()

    assert (first_stop, second_stop) == (0, 0)
    assert is_longitudinal
    assert rows == [{"record_id": "1", "my_first_instrument_complete": "0"}]
    assert stat.S_IMODE((tokens / "AutoID").stat().st_mode) == 0o600
    assert (tokens / "AutoID").read_text().strip() == token
    log = "".join(cli.seen)
    assert "content=record action=import project=1 status=200" in log
    assert token not in log and "record_id" not in log


def test_cli_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    assert main(["--db", str(tmp_path / "db.sqlite3"), "--tls-cert", str(tmp_path / "c.pem")]) == 2
