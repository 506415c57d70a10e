"""A study's package to an SFTP server: temporary name, confirmation, then the final name.

The package is what the outbox holds for the study: ``<study>.zip`` with its ``.sha256`` file
(each written as ``.<name>.part`` and renamed once confirmed), or the folder ``<study>/``
(written into ``.<study>.part/`` and renamed as a whole). The receiving side only ever sees
complete files under their final names.

Confirmation, per destination:

- ``read_back``: size and SHA-256 of the temporary file, read back through SFTP, must equal
  the local file's before the rename; a mismatch writes it again (up to ``TRIES`` times).
- ``md5_file``/``sha256_file``: the server writes ``<final name><suffix>`` once it holds the
  file (the original's DAIC did, with ``.md5sum_server``); the upload is renamed when its size
  is right, then counts once that checksum equals ours. A mismatch uploads it again.

What the server already holds under its final name, confirmed, is not written again, and a
shorter temporary file (a try cut short, or a restart) is continued, not restarted.
"""

import hashlib
import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import paramiko

from fiona_common.clock import utc_now
from fiona_common.projects import Destination, Project
from services.exporter import metrics
from services.exporter.ledger import Ledger, Status
from services.exporter.outbox_dir import file_receipt, publish_package
from services.exporter.sftp import (
    TRANSIENT,
    Server,
    TokenBucket,
    local_digest,
    make_dirs,
    put,
    read_small,
    remote_digest,
    remove,
    replace,
    session,
    size_of,
)

log = logging.getLogger(__name__)
TRIES = 3  # uploads of one package per delivery attempt before the attempt fails
POLL_SECONDS = 0.25  # how often a server's checksum file is looked for
Hook = Callable[[str], None]  # told each temporary remote path once written, before checks
PACKAGE = "package:"  # ledger names of packages (objects are listed by a hash)


class Failed(Exception):
    """The package is not confirmed yet (mismatch, no server checksum in time): retry later."""


# What an upload raises when a later attempt may succeed.
RETRY_LATER: tuple[type[BaseException], ...] = (*TRANSIENT, Failed)


@dataclass(frozen=True)
class Confirmation:
    method: str = "read_back"  # or md5_file, sha256_file
    suffix: str | None = None  # the server's checksum file: final name + suffix
    timeout_seconds: float = 300.0

    @classmethod
    def of(cls, destination: Destination) -> "Confirmation":
        return cls(
            destination.confirm, destination.checksum_suffix, destination.confirm_timeout_seconds
        )

    @property
    def by_server(self) -> bool:
        return self.method != "read_back"

    @property
    def algorithm(self) -> str:
        return "md5" if self.method == "md5_file" else "sha256"

    @property
    def checksum_suffix(self) -> str:
        return self.suffix or (".md5" if self.method == "md5_file" else ".sha256")


@dataclass(frozen=True)
class Item:
    local: Path
    final: str  # remote path the receiving side sees
    temp: str  # remote path while written


@dataclass(frozen=True)
class Package:
    name: str  # the ledger's name: "<study>.zip" or "<study>/"
    items: tuple[Item, ...]
    folder: tuple[str, str] | None = None  # folder packages: (temporary, final) folder

    @classmethod
    def of(cls, target: Path, relative: str, server: Server, archive: bool) -> "Package":
        """The package of the outbox study folder ``target`` (``relative`` to the outbox)."""
        if archive:
            zip_path = target.with_name(target.name + ".zip")
            locals_ = (zip_path, zip_path.with_name(zip_path.name + ".sha256"))
            items = tuple(
                _item(p, server.remote(f"{posixpath.dirname(relative)}/{p.name}")) for p in locals_
            )
            return cls(zip_path.name, items)
        final = server.remote(relative)
        temp = _temp_name(final)
        files = sorted(p for p in target.iterdir() if p.is_file())
        items = tuple(Item(p, f"{final}/{p.name}", f"{temp}/{p.name}") for p in files)
        return cls(f"{target.name}/", items, (temp, final))


def _temp_name(final: str) -> str:
    return posixpath.join(posixpath.dirname(final), f".{posixpath.basename(final)}.part")


def _item(local: Path, final: str) -> Item:
    return Item(local, final, _temp_name(final))


@dataclass(frozen=True)
class Receipt:
    remote: str  # final path of the study's archive (or folder)
    size_bytes: int
    sha256: str  # of the archive; of its files' "sha256  name" lines for a folder
    confirmed_by: str
    bytes_written: int  # in this attempt (0: the server held it already)
    resumed: bool  # an earlier, interrupted upload was continued


@dataclass(frozen=True)
class Upload:
    """One study to one SFTP destination."""

    server: Server
    confirmation: Confirmation
    archive: bool
    target: Path  # the study's folder in the outbox
    outbox: Path
    waiting: frozenset[str]  # who must confirm it too before it leaves the outbox

    @classmethod
    def of(cls, destination: Destination, project: Project, target: Path, outbox: Path) -> "Upload":
        server = Server.of(destination)
        # An outbox destination keeps the study in the outbox for good: it never confirms.
        uploaders = {
            Server.of(d).url if d.kind == "sftp" else "outbox"
            for d in project.destinations
            if d.kind != "dicom"
        }
        return cls(
            server,
            Confirmation.of(destination),
            destination.package == "archive",
            target,
            outbox,
            frozenset(uploaders - {server.url}),
        )

    @property
    def ledger_name(self) -> str:
        return PACKAGE + self.target.name + (".zip" if self.archive else "/")


def deliver_study(
    job: Upload, files: list[Path], bucket: TokenBucket | None, on_written: Hook | None = None
) -> Receipt:
    """Pack ``files`` (and what the study held before) into the outbox, upload the package
    until confirmed, file the receipt and move the package on to ``sent/`` when it may go."""
    publish_package(files, job.target, job.outbox, job.archive)
    relative = job.target.relative_to(job.outbox).as_posix()
    package = Package.of(job.target, relative, job.server, job.archive)
    receipt = upload(job.server, package, job.confirmation, bucket, on_written)
    filed = {**asdict(receipt), "confirmed_at": utc_now().isoformat()}
    file_receipt(job.target, job.outbox, job.server.url, filed, set(job.waiting))
    return receipt


def counts(result: Ledger) -> dict[str, int]:
    """Objects per status; SFTP packages (ledger entries too) as ``packages_<status>``."""
    found = dict.fromkeys([s.value for s in Status], 0)
    for name, entry in result.objects.items():
        label = f"packages_{entry.status.value}" if name.startswith(PACKAGE) else entry.status.value
        found[label] = found.get(label, 0) + 1
    return found


def window_wait(destination: Destination, now: datetime) -> float:
    """Seconds until an SFTP destination's upload window opens (0: now, or not SFTP)."""
    if destination.kind != "sftp":
        return 0.0
    local = now.astimezone()  # windows are in the exporter host's local time
    return destination.seconds_until_window(local.hour * 3600 + local.minute * 60 + local.second)


def upload(
    server: Server,
    package: Package,
    confirmation: Confirmation,
    bucket: TokenBucket | None = None,
    on_written: Hook | None = None,
) -> Receipt:
    """Connect, send ``package`` until confirmed, and say what the server holds."""
    with session(server) as sftp:
        return send(sftp, package, confirmation, bucket, on_written)


def send(
    sftp: paramiko.SFTPClient,
    package: Package,
    confirmation: Confirmation,
    bucket: TokenBucket | None = None,
    on_written: Hook | None = None,
) -> Receipt:
    """Send what the server does not hold confirmed; the receipt once all of it is."""
    first = package.items[0]
    written, resumed = 0, False
    rest = package.items
    if confirmation.by_server:  # the server's checksum file decides, even for what it holds
        written, resumed = _send_server_checked(sftp, first, confirmation, bucket, on_written)
        rest = package.items[1:]
    if package.folder is not None:  # renamed as a whole: all of it, or nothing
        held = all(_holds(sftp, i.final, i.local) for i in package.items)
        todo = [] if held else list(package.items)
    else:
        todo = [i for i in rest if not _holds(sftp, i.final, i.local)]
    if todo:
        w, r = _send_read_back(sftp, package, todo, bucket, on_written)
        written, resumed = written + w, resumed or r
    digest = _package_digest(package)
    size = sum(i.local.stat().st_size for i in package.items)
    remote = package.folder[1] if package.folder else first.final
    method = confirmation.method if confirmation.by_server else "read_back"
    return Receipt(remote, size, digest, method, written, resumed)


def _holds(sftp: paramiko.SFTPClient, remote: str, local: Path) -> bool:
    """Whether ``remote`` has exactly ``local``'s bytes (read back when the size matches)."""
    size = local.stat().st_size
    if size_of(sftp, remote) != size:
        return False
    return remote_digest(sftp, remote, "sha256") == (size, local_digest(local, "sha256"))


def _send_read_back(
    sftp: paramiko.SFTPClient,
    package: Package,
    todo: list[Item],
    bucket: TokenBucket | None,
    on_written: Hook | None,
) -> tuple[int, bool]:
    """Write ``todo`` under temporary names, read them back, rename them when all match."""
    written, resumed = 0, False
    for attempt in range(TRIES):
        if attempt:
            metrics.SFTP_RETRIES.labels("mismatch").inc()
        w, r = _write(sftp, package, todo, bucket, on_written)
        written, resumed = written + w, resumed or r
        bad = [i for i in todo if not _holds(sftp, i.temp, i.local)]
        if not bad:
            _commit(sftp, package, todo)
            return written, resumed
        metrics.SFTP_CONFIRMATION_FAILURES.inc()
        log.warning("upload differs on the server, writing it again", extra={"try": attempt + 1})
        for item in bad:
            remove(sftp, item.temp)
    raise Failed(f"{package.name}: still different on the server after {TRIES} uploads")


def _write(
    sftp: paramiko.SFTPClient,
    package: Package,
    todo: list[Item],
    bucket: TokenBucket | None,
    on_written: Hook | None,
) -> tuple[int, bool]:
    """Bytes written, and whether a partial file was continued."""
    if package.folder is not None:
        temp = package.folder[0]
        make_dirs(sftp, temp)
        wanted = {posixpath.basename(i.temp) for i in todo}
        for stale in set(sftp.listdir(temp)) - wanted:  # an older version's leftovers
            remove(sftp, posixpath.join(temp, stale))
    else:
        make_dirs(sftp, posixpath.dirname(todo[0].temp))
    written, resumed = 0, False
    for item in todo:
        result = put(sftp, item.local, item.temp, bucket)
        written += result.bytes
        resumed = resumed or result.resumed
        if on_written is not None:
            on_written(item.temp)
    return written, resumed


def _commit(sftp: paramiko.SFTPClient, package: Package, todo: list[Item]) -> None:
    if package.folder is not None:
        replace(sftp, *package.folder)
        return
    for item in todo:
        replace(sftp, item.temp, item.final)


def _send_server_checked(
    sftp: paramiko.SFTPClient,
    item: Item,
    confirmation: Confirmation,
    bucket: TokenBucket | None,
    on_written: Hook | None,
) -> tuple[int, bool]:
    """Upload ``item``, rename it when its size is right, and wait for the server's checksum."""
    size, expected = item.local.stat().st_size, local_digest(item.local, confirmation.algorithm)
    checksum_file = item.final + confirmation.checksum_suffix
    written, resumed = 0, False
    for attempt in range(TRIES + 1):
        if size_of(sftp, item.final) == size:  # ours, from this or an earlier attempt
            found = _server_checksum(sftp, checksum_file, confirmation)
            if found == expected:
                return written, resumed
            if found is None:
                wait = confirmation.timeout_seconds
                raise Failed(f"no checksum file from the server within {wait:.0f} s")
            metrics.SFTP_CONFIRMATION_FAILURES.inc()
            log.warning("server checksum differs, uploading again", extra={"try": attempt})
            metrics.SFTP_RETRIES.labels("mismatch").inc()
        if attempt == TRIES:
            break
        make_dirs(sftp, posixpath.dirname(item.temp))
        result = put(sftp, item.local, item.temp, bucket)
        written, resumed = written + result.bytes, resumed or result.resumed
        if on_written is not None:
            on_written(item.temp)
        if size_of(sftp, item.temp) != size:
            remove(sftp, item.temp)
            continue
        remove(sftp, checksum_file)  # an earlier upload's, before the server can write ours
        replace(sftp, item.temp, item.final)
    raise Failed(f"{posixpath.basename(item.final)}: server checksum still differs")


def _server_checksum(
    sftp: paramiko.SFTPClient, path: str, confirmation: Confirmation
) -> str | None:
    """The checksum in the server's file once it is there; None after the timeout."""
    deadline = time.monotonic() + confirmation.timeout_seconds
    length = 32 if confirmation.algorithm == "md5" else 64
    while True:
        text = read_small(sftp, path)
        token = (text or "").split(maxsplit=1)[0:1]
        if token and len(token[0]) == length:
            return token[0].lower()
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def _package_digest(package: Package) -> str:
    if package.folder is None:
        return local_digest(package.items[0].local, "sha256")
    lines = "".join(f"{local_digest(i.local, 'sha256')}  {i.local.name}\n" for i in package.items)
    return hashlib.sha256(lines.encode()).hexdigest()
