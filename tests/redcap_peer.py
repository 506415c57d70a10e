"""The REDCap API emulator as a peer for integration tests: one REDCap project per FIONA role,
their token files, and PyCap clients for the test's own reads and writes."""

from __future__ import annotations

from pathlib import Path

from redcap.project import Project

from redcap_emulator.emulator import Emulator
from redcap_emulator.server import EmulatorServer
from tests.certificates import certificate_authority
from tests.peers import free_port


class RedcapPeer:
    def __init__(self, workdir: Path, roles: list[str], tls: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        # HTTPS with a certificate of the test's own CA (``ca_file``) when ``tls``.
        self.ca_file: Path | None = None
        self._tls: tuple[Path, Path] | None = None
        if tls:
            self.ca_file, cert, key = certificate_authority(workdir)
            self._tls = (cert, key)
        self.emulator = Emulator(workdir / "redcap.sqlite3")
        self.tokens_dir = workdir / "tokens"
        self.tokens_dir.mkdir(mode=0o700, exist_ok=True)
        self.tokens: dict[str, str] = {}
        for role in roles:
            project = self.emulator.create_project(role)
            self.tokens[role] = self.emulator.add_token(project)
            path = self.tokens_dir / role
            path.write_text(self.tokens[role] + "\n")
            path.chmod(0o600)
        self.port = free_port()
        self._server: EmulatorServer | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/api/"

    def start(self) -> RedcapPeer:
        """Serve (again: on the same port, with the same database)."""
        cert, key = self._tls or (None, None)
        self._server = EmulatorServer(self.emulator, port=self.port, tls_cert=cert, tls_key=key)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, role: str) -> Project:
        return Project(
            self.url, self.tokens[role], verify_ssl=str(self.ca_file) if self.ca_file else True
        )
