"""The ``fiona`` command: up (supervision), status, run, and errors a user can make."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.fiona_process import REPO, http_get
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, echo_scu, free_port, port_open


def fiona(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fiona_cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def base_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIONA_")}
    return {**env, "PYTHONPATH": str(REPO), "TCP_NODELAY": "1", **settings}


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_up_runs_nats_and_the_receiver_restarts_crashes_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    ports = {"nats": free_port(), "dicom": free_port(), "http": free_port()}
    env = base_env(
        FIONA_LOCAL_NATS_PORT=str(ports["nats"]),
        FIONA_DICOMPORT=str(ports["dicom"]),
        FIONA_RECEIVER__HTTP_PORT=str(ports["http"]),
    )
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "fiona_cli", "up", "--data", str(tmp_path / "data")],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        ready = f"http://127.0.0.1:{ports['http']}/readyz"
        wait_until(lambda: http_get(ready)[0] == 200, timeout=30, what="receiver ready")
        assert echo_scu("127.0.0.1", ports["dicom"]).returncode == 0
        assert (tmp_path / "data/state/nats").is_dir()  # NATS keeps its store in the data dir

        status_env = {**env, "FIONA_NATS_URL": f"nats://127.0.0.1:{ports['nats']}"}
        # The receiver is ready first; the others may still be starting (a loaded machine).
        wait_until(lambda: fiona("status", env=status_env).returncode == 0, 60, "all ready")
        status = fiona("status", env=status_env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "receiver" in status.stdout and "FIONA_INSTANCES" in status.stdout

        receiver_pid = next(
            p for p in children_of(up.pid) if b"receiver" in Path(f"/proc/{p}/cmdline").read_bytes()
        )
        os.kill(receiver_pid, signal.SIGKILL)
        wait_until(lambda: http_get(ready)[0] != 200, timeout=10, what="receiver gone")
        wait_until(lambda: http_get(ready)[0] == 200, timeout=30, what="receiver restarted")

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=40) == 0
        assert children_of(up.pid) == []
        assert "did not stop in time" not in (tmp_path / "up.log").read_text()  # no SIGKILL
        assert not port_open(ports["nats"]) and not port_open(ports["dicom"])
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()


def test_a_killed_fiona_up_takes_its_services_and_nats_with_it(tmp_path: Path) -> None:
    # They used to live on as orphans, holding their ports (9101-9107 by default).
    ports = {"nats": free_port(), "dicom": free_port(), "http": free_port()}
    env = base_env(
        FIONA_LOCAL_NATS_PORT=str(ports["nats"]),
        FIONA_DICOMPORT=str(ports["dicom"]),
        FIONA_RECEIVER__HTTP_PORT=str(ports["http"]),
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "fiona_cli", "up", "--data", str(tmp_path / "data")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    children: list[int] = []
    try:
        ready = f"http://127.0.0.1:{ports['http']}/readyz"
        wait_until(lambda: http_get(ready)[0] == 200, timeout=30, what="receiver ready")
        wait_until(lambda: len(children_of(up.pid)) >= 7, timeout=30, what="every child")
        children = children_of(up.pid)
        os.kill(up.pid, signal.SIGKILL)
        up.wait(timeout=10)
        wait_until(lambda: not any(alive(p) for p in children), timeout=40, what="children gone")
        assert not port_open(ports["nats"]) and not port_open(ports["dicom"])
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_status_is_non_zero_when_services_are_down(tmp_path: Path, nats_server: NatsServer) -> None:
    env = base_env(FIONA_NATS_URL=nats_server.url, FIONA_RECEIVER__HTTP_PORT=str(free_port()))
    result = fiona("status", env=env)
    assert result.returncode == 1
    assert "NOT READY" in result.stdout


def test_configuration_mistake_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"DICOMPORT": "four thousand"}')
    result = fiona("run", "receiver", "--config", str(tmp_path / "config.json"), env=base_env())
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "DICOMPORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_answers_help() -> None:
    for args in (["--help"], ["up", "--help"], ["run", "--help"], ["status", "--help"]):
        assert fiona(*args, env=base_env()).returncode == 0
    assert fiona("run", "nonsense", env=base_env()).returncode == 2


def test_fiona_deid_uses_the_projects_file_and_key_of_the_data_directory(tmp_path: Path) -> None:
    from fiona_cli.main import main as fiona
    from services.redcap_sync.demo import write_demo
    from tests.builders import write_series

    data = tmp_path / "data"
    write_demo(data / "config" / "projects.json")
    source = write_series(tmp_path / "in", 2, PatientID="REAL-9", PatientName="Real^Name")
    out = tmp_path / "out"
    argv = ["deid", "--data", str(data), "--project", "DEMO", "--subject", "DEMO0001"]
    assert fiona([*argv, str(source[0].parent), str(out)]) == 0
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 2 and all(b"REAL-9" not in f.read_bytes() for f in written)
    key = data / "state" / "secrets" / "deid.key"
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
    assert fiona(["deid", "--profile", "recommended", "--list-profile"]) == 0
