"""Real peer processes for integration tests: NATS, DCMTK tools, storescp and Orthanc.

Every process is started on free 127.0.0.1 ports, in its own session (process group),
with its log written to a file in the test's tmp dir. Startup waits poll for a real
readiness signal with a deadline (no fixed sleeps); on timeout or early exit the log
tail is printed and put into the exception. ``stop()``/``kill()`` end the whole process
group; an ``atexit`` hook kills anything a crashed test left behind.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

from pydicom import uid as tsuid
from pydicom.filereader import read_file_meta_info

LOCALHOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.02
_LOG_TAIL_CHARS = 4000


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all bound at once, so they cannot coincide)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind((LOCALHOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int, host: str = LOCALHOST) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- DCMTK tools


@functools.cache
def dcmtk(tool: str) -> str:
    """Absolute path of the real DCMTK ``tool`` (storescu, echoscu, storescp, dcmdump...).

    pynetdicom installs Python shims named ``storescu``/``storescp``/``echoscu`` that come
    earlier on PATH, so /usr/bin is tried first and every candidate must say "dcmtk" in
    its ``--version`` output.
    """
    path_dirs = os.environ.get("PATH", "").split(os.pathsep)
    candidates = [Path("/usr/bin", tool), *(Path(d, tool) for d in path_dirs if d)]
    for candidate in candidates:
        if not os.access(candidate, os.X_OK) or candidate.is_dir():
            continue
        try:
            out = subprocess.run(
                [str(candidate), "--version"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return str(candidate.resolve())
    raise FileNotFoundError(
        f"DCMTK tool {tool!r} not found: no {tool} in /usr/bin or on PATH reports 'dcmtk' "
        "in --version (pynetdicom's shims do not count); install the 'dcmtk' package"
    )


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK/Orthanc processes: os.environ plus ``TCP_NODELAY=1``.

    Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY is set, which stalls
    every C-STORE by ~40 ms.
    """
    return {**os.environ, "TCP_NODELAY": "1"}


def _run_dcmtk(
    args: Sequence[str], *, timeout: float, check: bool
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK command line; with ``check`` raise with its output on non-zero exit."""
    result = subprocess.run(
        list(args), capture_output=True, text=True, env=dcmtk_env(), timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def store_scu(
    host: str,
    port: int,
    paths: Iterable[str | os.PathLike[str]],
    *,
    calling_aet: str = "STORESCU",
    called_aet: str = "FIONA",
    extra_args: Sequence[str] = (),
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Send files and/or directories (recursively) with DCMTK storescu in one association.

    ``extra_args`` go to storescu unchanged, e.g. ``["-xs"]`` to propose JPEG lossless.
    By default storescu proposes only the uncompressed transfer syntaxes for every storage
    SOP class, so a compressed file fails to send (it cannot decompress) and an implicit-VR
    file is converted to explicit VR little endian. To send a file in its own transfer
    syntax pass ``-R`` (propose only the SOP classes of the given files) plus the
    ``--propose-*`` option of that syntax (see ``PROPOSE_OPTION``), or simply use
    ``store_scu_as_is``. storescu exits non-zero on a failed association or C-STORE status;
    with ``check`` (default) that raises with storescu's output.
    """
    path_list = [str(p) for p in paths]
    if not path_list:
        raise ValueError("store_scu needs at least one path")
    scan = ["+sd", "+r"] if any(Path(p).is_dir() for p in path_list) else []
    args = [
        dcmtk("storescu"),
        "-aet", calling_aet,
        "-aec", called_aet,
        *scan,
        *extra_args,
        host, str(port),
        *path_list,
    ]  # fmt: skip
    return _run_dcmtk(args, timeout=timeout, check=check)


# storescu option proposing the given transfer syntax in its own presentation context,
# verified against ``storescp +xa +B`` (see tests/test_harness.py).
PROPOSE_OPTION: dict[str, str] = {
    tsuid.ImplicitVRLittleEndian: "-xi",  # propose implicit VR only: no conversion
    tsuid.ExplicitVRLittleEndian: "-xe",
    tsuid.ExplicitVRBigEndian: "-xb",
    tsuid.DeflatedExplicitVRLittleEndian: "-xd",
    tsuid.JPEGBaseline8Bit: "-xy",
    tsuid.JPEGExtended12Bit: "-xx",
    tsuid.JPEGLosslessSV1: "-xs",
    tsuid.JPEGLSLossless: "-xt",
    tsuid.JPEGLSNearLossless: "-xu",
    tsuid.JPEG2000Lossless: "-xv",
    tsuid.JPEG2000: "-xw",
    tsuid.RLELossless: "-xr",
    tsuid.MPEG2MPML: "-xm",
    tsuid.MPEG2MPHL: "-xh",
    tsuid.MPEG4HP41: "-xn",
    tsuid.MPEG4HP41BD: "-xl",
    tsuid.MPEG4HP422D: "-x2",
    tsuid.MPEG4HP423D: "-x3",
    tsuid.MPEG4HP42STEREO: "-xo",
    tsuid.HEVCMP51: "-x4",
    tsuid.HEVCM10P51: "-x5",
}


def store_scu_as_is(
    host: str,
    port: int,
    files: Iterable[str | os.PathLike[str]],
    *,
    calling_aet: str = "STORESCU",
    called_aet: str = "FIONA",
    extra_args: Sequence[str] = (),
    timeout: float = 120,
    check: bool = True,
) -> list[subprocess.CompletedProcess[str]]:
    """Send each Part 10 file in its OWN transfer syntax, without any conversion.

    Found empirically with DCMTK 3.6.7 against ``storescp +xa +B``: plain storescu never
    proposes a file's compressed syntax, and it converts implicit VR LE to explicit VR LE
    because its default context for implicit VR also offers big endian, which the SCP
    picks. What works is ``-R`` (``--required``: contexts only for the files' SOP classes)
    plus the ``--propose-*`` option of the file's syntax, which puts that syntax into its
    own presentation context: ``-xi`` implicit LE, ``-xe`` explicit LE, ``-xb`` explicit
    BE, ``-xd`` deflated, ``-xy`` JPEG baseline, ``-xx`` JPEG extended, ``-xs`` JPEG
    lossless SV1, ``-xt``/``-xu`` JPEG-LS lossless/near-lossless, ``-xv``/``-xw`` JPEG 2000
    lossless/lossy, ``-xr`` RLE (``PROPOSE_OPTION``). storescu then picks the context whose
    syntax equals the file's. Files are grouped by transfer syntax; each group is one
    storescu run (one association), returned in order. Raises ValueError for a syntax
    storescu cannot propose from the command line (e.g. JPEG lossless non-SV1 .57).

    Dataset bytes arrive unchanged only if the file is already in the encoding DCMTK
    writes (explicit-length sequences, OB encapsulated Pixel Data, no group lengths or
    trailing padding...); ``tests.builders.canonical_copy`` produces such files.
    """
    groups: dict[str, list[str]] = {}
    for path in files:
        syntax = str(read_file_meta_info(path).TransferSyntaxUID)
        if syntax not in PROPOSE_OPTION:
            raise ValueError(f"storescu cannot propose transfer syntax {syntax} ({path})")
        groups.setdefault(syntax, []).append(os.fspath(path))
    return [
        store_scu(
            host,
            port,
            group,
            calling_aet=calling_aet,
            called_aet=called_aet,
            extra_args=["-R", PROPOSE_OPTION[syntax], *extra_args],
            timeout=timeout,
            check=check,
        )
        for syntax, group in groups.items()
    ]


def echo_scu(
    host: str,
    port: int,
    *,
    called_aet: str = "FIONA",
    calling_aet: str = "ECHOSCU",
    timeout: float = 30,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO host:port with DCMTK echoscu; with ``check`` raise on failure."""
    args = [dcmtk("echoscu"), "-aet", calling_aet, "-aec", called_aet, host, str(port)]
    return _run_dcmtk(args, timeout=timeout, check=check)


# --------------------------------------------------------------------------- processes

_LIVE: set[ManagedProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Last-resort cleanup for peers that a test never stopped."""
    for peer in list(_LIVE):
        peer.kill()


class PeerStartupError(RuntimeError):
    """A peer did not become ready in time or exited during startup."""


class ManagedProcess:
    """A subprocess in its own session with its output appended to ``log_path``.

    Subclasses provide ``command()`` and ``ready()``; ``start()`` launches and waits for
    ``ready()``. Usable as a context manager (stops on exit).
    """

    name = "process"
    env: dict[str, str] | None = None

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self._exited()

    def _exited(self) -> bool:
        """True once the process exited; it stays a zombie (group id reserved) until reaped."""
        assert self.proc is not None
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # already reaped
            return True
        return info is not None

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Self:
        """Launch the process and wait until ``ready()``; kill it and raise on failure."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.running:
                self._fail("exited during startup")
            if time.monotonic() > deadline:
                self._fail(f"not ready after {timeout:.0f} s")
            time.sleep(_POLL_INTERVAL)

    def _fail(self, reason: str) -> NoReturn:
        tail = self.log_text()[-_LOG_TAIL_CHARS:]
        message = f"{self.name} {reason}; command: {' '.join(self.command())}\n"
        message += f"--- {self.log_path} (tail) ---\n{tail}"
        print(message)
        raise PeerStartupError(message)

    def log_text(self) -> str:
        """The log written since the last ``start()``."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group and wait; SIGKILL whatever is left after ``timeout``."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the process group at once (simulates a crash)."""
        self._end(signal.SIGKILL, STOP_TIMEOUT)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        # The leader is reaped only after the final SIGKILL, so until then its pid (the
        # process group id) cannot be reused and only our own processes are signalled.
        _killpg(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while not self._exited() and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL)
        _killpg(proc.pid, signal.SIGKILL)  # stragglers, e.g. storescp --fork children
        proc.wait(timeout)
        _LIVE.discard(self)

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group we created; ignore it having vanished already."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(_POLL_INTERVAL)


class NatsServer(ManagedProcess):
    """nats-server with JetStream on 127.0.0.1:<free port>, file store under ``workdir``.

    ``stop()`` then ``start()`` restarts on the SAME port and store directory, so tests can
    simulate an outage and check that JetStream data survives; ``kill()`` simulates a crash.
    ``config``: a nats-server configuration file (authorization, TLS); the command line's
    address, port and store directory win over it.
    """

    name = "nats-server"

    def __init__(
        self, workdir: Path, *, port: int | None = None, config: Path | None = None
    ) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.store_dir = self.workdir / "jetstream"
        self.config = config

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
        config = ["-c", str(self.config)] if self.config else []
        where = ["-a", LOCALHOST, "-p", str(self.port), "-sd", str(self.store_dir)]
        return [exe, *config, "-js", *where]

    def ready(self) -> bool:
        return "Server is ready" in self.log_text() and port_open(self.port)


class StoreScp(ManagedProcess):
    """DCMTK storescp: a research-PACS stand-in that stores whatever it receives.

    ``storescp --fork +xa +B -pm``: one child per association, accepts all transfer
    syntaxes DCMTK knows (``+xa``) and unknown SOP classes (``-pm``), and writes the
    received dataset bit for bit (``+B``) as ``<modality>.<SOPInstanceUID>`` files into
    ``output_dir``. A file is complete once its C-STORE response was sent.
    """

    name = "storescp"

    def __init__(self, workdir: Path, *, aet: str = "STORESCP", port: int | None = None) -> None:
        super().__init__(workdir)
        self.env = dcmtk_env()
        self.aet = aet
        self.port = port or free_port()
        self.output_dir = self.workdir / "received"
        self.output_dir.mkdir(exist_ok=True)

    def command(self) -> list[str]:
        return [
            dcmtk("storescp"),
            "--fork", "+xa", "+B", "-pm", "-dhl",
            "-aet", self.aet,
            "-od", str(self.output_dir),
            str(self.port),
        ]  # fmt: skip

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        echo = echo_scu(LOCALHOST, self.port, called_aet=self.aet, timeout=5, check=False)
        return echo.returncode == 0

    def received_files(self) -> list[Path]:
        """Files stored so far, sorted by name."""
        return sorted(p for p in self.output_dir.iterdir() if p.is_file())

    def wait_for_files(self, count: int, timeout: float = 30) -> list[Path]:
        """Wait until at least ``count`` files were stored; return them."""
        _wait_until(lambda: len(self.received_files()) >= count, timeout, f"{count} files")
        return self.received_files()


class Orthanc(ManagedProcess):
    """Orthanc with a throw-away config, storage and index under ``workdir``.

    DICOM and HTTP on free ports, no plugins, no authentication, remote access off (so
    REST is localhost only), called AET not checked. ``modalities`` becomes
    ``DicomModalities`` (``{"NAME": ["AET", "127.0.0.1", port]}``); ``extra_config`` is
    merged last (e.g. ``{"StableAge": 1}``).
    """

    name = "orthanc"

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        modalities: dict[str, list[Any]] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(workdir)
        self.env = dcmtk_env()
        self.aet = aet
        self.dicom_port, self.http_port = free_ports(2)
        self.config_path = self.workdir / "orthanc.json"
        config = {
            "Name": f"fiona-test-{aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "DicomModalities": modalities or {},
            "SaveJobs": False,
            **(extra_config or {}),
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.http_port}"

    def command(self) -> list[str]:
        exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        return [exe, str(self.config_path)]

    def ready(self) -> bool:
        try:
            self.get_json("/system", timeout=1)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return port_open(self.dicom_port)

    def get_json(self, path: str, timeout: float = 10) -> Any:
        """GET ``path`` from the REST API and decode the JSON answer."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.load(response)

    def delete(self, path: str, timeout: float = 10) -> None:
        """DELETE ``path`` through the REST API (e.g. one instance)."""
        request = urllib.request.Request(self.url + path, method="DELETE")
        with urllib.request.urlopen(request, timeout=timeout):
            pass

    def post_json(self, path: str, body: Any, timeout: float = 30) -> Any:
        """POST ``body`` as JSON to the REST API and decode the JSON answer."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def instances(self) -> list[str]:
        """Orthanc ids of all stored instances."""
        return list(self.get_json("/instances"))
