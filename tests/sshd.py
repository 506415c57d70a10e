"""A real OpenSSH server for SFTP tests, and a stand-in for a site's checksum process.

``Sshd`` runs Debian's ``/usr/sbin/sshd`` in the foreground on a free loopback port with a
host key and a user key generated for the test (the user key has a passphrase, kept in a file
like a production secret). The login is the current user, allowed SFTP only
(``ForceCommand internal-sftp``), starting in ``root``: remote paths in tests are relative to
it. A chroot would confine it further, but sshd wants every component of a chroot path owned
by root and writable by nobody else, which pytest's tmp directories under /tmp are not.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from tests.peers import LOCALHOST, ManagedProcess, free_port

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it (the Debian unit makes it)


def have_sshd() -> bool:
    return SSHD.is_file() and shutil.which("ssh-keygen") is not None


def keygen(path: Path, passphrase: str = "") -> str:
    """A new Ed25519 key pair at ``path`` (and ``.pub``); the public key line."""
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "fiona-test",
            "-f",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


class Sshd(ManagedProcess):
    """sshd on 127.0.0.1:``port``; ``root`` is where the SFTP session starts."""

    name = "sshd"
    PASSPHRASE = "correct horse battery staple"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.root = self.workdir / "root"
        self.root.mkdir(exist_ok=True)
        self.host_key = self.workdir / "host_ed25519"
        self.user_key = self.workdir / "user_ed25519"
        self.passphrase_file = self.workdir / "user_ed25519.passphrase"
        self.user = getpass.getuser()
        if not self.host_key.exists():
            self._make_keys()
        self.config = self.workdir / "sshd_config"
        self.config.write_text(self._config())

    def _make_keys(self) -> None:
        host_public = keygen(self.host_key)
        user_public = keygen(self.user_key, self.PASSPHRASE)
        self.passphrase_file.write_text(self.PASSPHRASE + "\n")
        (self.workdir / "authorized_keys").write_text(user_public + "\n")
        self.known_hosts.write_text(f"[{LOCALHOST}]:{self.port} {host_public}\n")
        for secret in (self.host_key, self.user_key, self.passphrase_file):
            os.chmod(secret, 0o600)

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file naming this server's host key."""
        return self.workdir / "known_hosts"

    def _config(self) -> str:
        return "\n".join(
            [
                f"Port {self.port}",
                f"ListenAddress {LOCALHOST}",
                f"HostKey {self.host_key}",
                "PidFile none",
                f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
                f"AllowUsers {self.user}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",  # pytest's tmp directories are not what sshd wants for keys
                "Subsystem sftp internal-sftp",
                f"ForceCommand internal-sftp -d {self.root}",
                "AllowTcpForwarding no",
                "X11Forwarding no",
                "LogLevel INFO",
                "",
            ]
        )

    def command(self) -> list[str]:
        return [str(SSHD), "-D", "-e", "-f", str(self.config)]

    def start(self, timeout: float = 30.0) -> Sshd:
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        return super().start(timeout)

    def ready(self) -> bool:
        return f"Server listening on {LOCALHOST} port {self.port}" in self.log_text()

    def destination(self, **fields: object) -> dict[str, object]:
        """An sftp destination of the projects file for this server."""
        return {
            "kind": "sftp",
            "host": LOCALHOST,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.user_key),
            "passphrase_file": str(self.passphrase_file),
            "known_hosts_file": str(self.known_hosts),
            "remote_dir": "upload",
            **fields,
        }


class ChecksumWriter:
    """The receiving site's checksum job (the original's incron ``checkIncomingFile.sh``):
    for every new file matching ``pattern`` under ``root`` it writes ``<name><suffix>`` with
    the file's MD5, in ``md5sum`` format. ``tamper`` may change a file first (it is told the
    path and how many files it has seen), standing in for a transfer that went wrong."""

    def __init__(
        self,
        root: Path,
        pattern: str = "*.zip",
        suffix: str = ".md5",
        tamper: Callable[[Path, int], None] | None = None,
    ) -> None:
        self.root, self.pattern, self.suffix, self.tamper = root, pattern, suffix, tamper
        self.seen: dict[Path, tuple[int, int]] = {}  # path -> (inode, mtime) handled
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChecksumWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for path in self.root.rglob(self.pattern):
                if not path.name.startswith("."):  # temporary names are not the site's yet
                    self._handle(path)

    def _handle(self, path: Path) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        if self.seen.get(path) == (st.st_ino, st.st_mtime_ns):
            return
        self.count += 1
        if self.tamper is not None:
            self.tamper(path, self.count)
        data = path.read_bytes()
        self.seen[path] = (path.stat().st_ino, path.stat().st_mtime_ns)
        line = f"{hashlib.md5(data).hexdigest()} *{path.name}\n"
        path.with_name(path.name + self.suffix).write_text(line)


def flip_a_byte(path: Path, offset: int = 100) -> None:
    """Corrupt ``path`` in place (same size), as a bad transfer would."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
