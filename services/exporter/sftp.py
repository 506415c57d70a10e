"""SFTP servers (paramiko): log in with a key, check the host key, write, read back, rename.

The host key must already be in the destination's known_hosts file: an unknown or changed key
is refused, never learnt. Key and passphrase are secret files, read when a connection opens (a
rotated key needs no restart) and never logged. Writes go through a token bucket when the
destination sets ``max_bytes_per_second``; a write into a partial file continues where it ends.
The upload protocol (temporary names, confirmation, renames) is in ``sftp_package``.
"""

import errno
import hashlib
import io
import logging
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from fiona_common.errors import ConfigError
from fiona_common.projects import Destination
from fiona_common.secret_files import read_secret
from services.exporter import metrics

log = logging.getLogger(__name__)
CHUNK = 32768  # one SFTP write request
CONNECT_TIMEOUT = 20.0
IO_TIMEOUT = 60.0  # a server that stops answering mid-transfer is a transient failure
SYSTEM_KNOWN_HOSTS = (Path("~/.ssh/known_hosts").expanduser(), Path("/etc/ssh/ssh_known_hosts"))
# What a connection or transfer raises when retrying later may help (network, server, disk).
TRANSIENT: tuple[type[BaseException], ...] = (OSError, EOFError, paramiko.SSHException)


class Refused(Exception):
    """Retrying cannot help until an admin acts: unknown host key, login or key refused."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    key_file: Path
    passphrase_file: Path | None = None
    known_hosts_file: Path | None = None
    remote_dir: str = "."
    max_bytes_per_second: int | None = None

    @classmethod
    def of(cls, destination: Destination) -> "Server":
        if not (destination.host and destination.user and destination.key_file):
            raise ConfigError("an sftp destination needs host, user and key_file")
        return cls(
            destination.host,
            destination.port or 22,
            destination.user,
            destination.key_file,
            destination.passphrase_file,
            destination.known_hosts_file,
            destination.remote_dir,
            destination.max_bytes_per_second,
        )

    @property
    def url(self) -> str:
        """Names the destination in receipts and logs (no secrets in it)."""
        return f"sftp://{self.user}@{self.host}:{self.port}/{self.remote_dir.strip('/')}"

    def remote(self, relative: str) -> str:
        return posixpath.normpath(posixpath.join(self.remote_dir, relative))

    def bucket(self, buckets: "dict[tuple[str, int], TokenBucket]") -> "TokenBucket | None":
        """This server's upload limit, one per process (kept in ``buckets``); None: no limit."""
        rate = self.max_bytes_per_second
        if rate is None:
            return None
        return buckets.setdefault((self.url, rate), TokenBucket(rate))


class TokenBucket:
    """At most ``rate`` bytes per second on average, ``burst`` bytes at once; shared by the
    threads uploading to one server (each waits for its own share)."""

    def __init__(
        self,
        rate: float,
        burst: float = CHUNK,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.clock, self.sleep = clock, sleep
        self.tokens, self.stamp = burst, clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Wait until ``n`` bytes may go (a request larger than the burst runs into debt)."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            debt = -self.tokens
        if debt > 0:
            self.sleep(debt / self.rate)


@contextmanager
def session(server: Server) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session on ``server``, the host key checked first.

    Raises:
        Refused: the host key is unknown or different, or the login is refused.
        ConfigError: the key (or its passphrase) file cannot be read.
        OSError, paramiko.SSHException: the server cannot be reached (transient).
    """
    client = paramiko.SSHClient()
    try:
        yield _open(client, server)
    finally:
        client.close()


def _open(client: paramiko.SSHClient, server: Server) -> paramiko.SFTPClient:
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    _trust(client, server)
    try:
        client.connect(
            server.host,
            server.port,
            username=server.user,
            pkey=_login_key(server),
            timeout=CONNECT_TIMEOUT,
            banner_timeout=CONNECT_TIMEOUT,
            auth_timeout=CONNECT_TIMEOUT,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException:
        raise Refused(f"{server.url}: the host key differs from the known one") from None
    except paramiko.AuthenticationException:
        raise Refused(f"{server.url}: login refused for the configured key") from None
    sftp = client.open_sftp()
    sftp.get_channel().settimeout(IO_TIMEOUT)
    return sftp


def _host_name(server: Server) -> str:
    """How known_hosts names the server (OpenSSH: ``[host]:port`` unless the port is 22)."""
    return server.host if server.port == 22 else f"[{server.host}]:{server.port}"


def _trust(client: paramiko.SSHClient, server: Server) -> None:
    """Load the known host keys; refuse at once when none names the server."""
    files = [server.known_hosts_file] if server.known_hosts_file else list(SYSTEM_KNOWN_HOSTS)
    for path in files:
        if path.is_file():
            client.load_host_keys(str(path))
        elif server.known_hosts_file:
            raise ConfigError(f"known_hosts_file {path} cannot be read")
    if client.get_host_keys().lookup(_host_name(server)) is None:
        where = ", ".join(str(p) for p in files)
        raise Refused(f"{server.url}: no known host key for {_host_name(server)} in {where}")


def _login_key(server: Server) -> paramiko.PKey:
    """The private key from its secret file (OpenSSH or PEM; Ed25519, ECDSA or RSA)."""
    text = read_secret(server.key_file, "SFTP key", min_length=64).decode(errors="replace")
    passphrase = None
    if server.passphrase_file is not None:
        passphrase = read_secret(server.passphrase_file, "SFTP key passphrase", 1)
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text + "\n"), password=passphrase)
        except (paramiko.SSHException, ValueError):
            continue
    raise ConfigError(
        f"SFTP key file {server.key_file}: not a usable private key (or a wrong passphrase)"
    )


def size_of(sftp: paramiko.SFTPClient, remote: str) -> int | None:
    """The remote file's size, None when it does not exist."""
    try:
        attrs = sftp.stat(remote)
    except FileNotFoundError:
        return None
    return int(attrs.st_size or 0)


def is_dir(sftp: paramiko.SFTPClient, remote: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(remote).st_mode or 0)
    except FileNotFoundError:
        return False


def make_dirs(sftp: paramiko.SFTPClient, remote: str) -> None:
    """``mkdir -p`` on the server."""
    if remote in ("", ".", "/") or is_dir(sftp, remote):
        return
    make_dirs(sftp, posixpath.dirname(remote))
    try:
        sftp.mkdir(remote)
    except OSError:
        if not is_dir(sftp, remote):  # else someone made it meanwhile
            raise


def remove(sftp: paramiko.SFTPClient, remote: str) -> None:
    """Remove a file or a whole folder; nothing when absent."""
    try:
        attrs = sftp.stat(remote)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(attrs.st_mode or 0):
        for name in sftp.listdir(remote):
            remove(sftp, posixpath.join(remote, name))
        sftp.rmdir(remote)
    else:
        sftp.remove(remote)


def replace(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    """Rename ``source`` to ``target``, replacing a file there atomically (OpenSSH's
    posix-rename); a folder there is moved aside first and removed after."""
    if is_dir(sftp, target):
        aside = posixpath.join(posixpath.dirname(target), f".{posixpath.basename(target)}.old")
        remove(sftp, aside)
        sftp.rename(target, aside)
        sftp.rename(source, target)
        remove(sftp, aside)
        return
    try:
        sftp.posix_rename(source, target)
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise
        remove(sftp, target)  # a server without the extension: not atomic, but complete
        sftp.rename(source, target)


@dataclass(frozen=True)
class Written:
    bytes: int  # sent now
    resumed: bool  # continued a partial file left by an earlier try


def put(sftp: paramiko.SFTPClient, local: Path, remote: str, bucket: TokenBucket | None) -> Written:
    """Write ``local`` to ``remote``, continuing a shorter file there (what it holds is
    confirmed with the whole file later); a longer one is started afresh."""
    size = local.stat().st_size
    existing = size_of(sftp, remote)
    if existing == size:  # complete already (its content is checked with the rest)
        return Written(0, resumed=False)
    have = existing if existing is not None and existing < size else 0
    if have:
        metrics.SFTP_RETRIES.labels("resume").inc()
    sent = 0
    with local.open("rb") as source, sftp.open(remote, "r+b" if have else "wb") as target:
        target.set_pipelined(True)
        source.seek(have)
        target.seek(have)
        while chunk := source.read(CHUNK):
            if bucket is not None:
                bucket.take(len(chunk))
            target.write(chunk)
            sent += len(chunk)
            metrics.SFTP_BYTES.inc(len(chunk))
    return Written(sent, have > 0)


def remote_digest(sftp: paramiko.SFTPClient, remote: str, algorithm: str) -> tuple[int, str]:
    """Size and checksum of the remote file, read back through SFTP."""
    digest = hashlib.new(algorithm)
    size = 0
    with sftp.open(remote, "rb") as f:
        f.prefetch(f.stat().st_size)
        while chunk := f.read(CHUNK * 8):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def read_small(sftp: paramiko.SFTPClient, remote: str, limit: int = 4096) -> str | None:
    """A short text file's content, None when it does not exist."""
    try:
        with sftp.open(remote, "rb") as f:
            data: Any = f.read(limit)
    except FileNotFoundError:
        return None
    return bytes(data).decode(errors="replace")


def local_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
