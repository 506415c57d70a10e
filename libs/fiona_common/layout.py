"""The data directory layout (shared/CONTRACT.md section 4), in one place.

Every path built from a DICOM value goes through this module, and every UID is validated here
before it becomes part of a path: a hostile UID such as ``../../etc`` never reaches the disk.
"""

import grp
import os
import posixpath
import re
import stat
from pathlib import Path

from fiona_common.errors import BadInput, ConfigError
from fiona_common.logs import short_hash

# Digits and dots, no empty component, at most 64 characters (PS3.5 9.1). Components with a
# leading zero are invalid in the standard but harmless as paths and seen from real scanners,
# so they are accepted rather than quarantining a patient's study.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_MODALITY_PREFIX = re.compile(r"[A-Za-z0-9]{1,16}")

DIR_MODE = 0o750
FILE_MODE = 0o640
# With SHARED_GROUP: folders the group reads (set-group-ID: what is created below inherits the
# group), and the inbox, where its members also drop files.
SHARED_DIR_MODE = stat.S_ISGID | 0o750
SHARED_DROP_MODE = stat.S_ISGID | 0o770


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a syntactically valid DICOM UID."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def checked_uid(value: object, what: str) -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`BadInput` naming ``what``."""
    if not is_valid_uid(value):
        raise BadInput(f"invalid_{what}", f"{what} is missing or not a valid DICOM UID")
    return str(value)


class Layout:
    """Paths under one data directory (``DATADIR`` of config.json, or of a ``SITES`` entry)."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir

    @property
    def config_dir(self) -> Path:
        return self.datadir / "config"

    @property
    def enabled_file(self) -> Path:
        return self.config_dir / "enabled"

    @property
    def site_dir(self) -> Path:
        return self.datadir / "site"

    @property
    def archive_dir(self) -> Path:
        return self.site_dir / "archive"

    @property
    def raw_dir(self) -> Path:
        return self.site_dir / "raw"

    @property
    def participants_dir(self) -> Path:
        return self.site_dir / "participants"

    @property
    def srs_dir(self) -> Path:
        return self.site_dir / "srs"

    @property
    def arrived_dir(self) -> Path:
        return self.site_dir / ".arrived"

    @property
    def inbox_dir(self) -> Path:
        return self.datadir / "inbox"

    @property
    def outbox_dir(self) -> Path:
        return self.datadir / "outbox"

    @property
    def quarantine_dir(self) -> Path:
        return self.datadir / "quarantine"

    @property
    def state_dir(self) -> Path:
        """Service bookkeeping that must survive restarts (never patient data)."""
        return self.datadir / "state"

    @property
    def incoming_dir(self) -> Path:
        """Partially received objects; on the archive's file system so a rename is atomic."""
        return self.site_dir / ".incoming"

    def study_archive_dir(self, study_uid: str) -> Path:
        return self.archive_dir / f"scp_{checked_uid(study_uid, 'study_uid')}"

    def archive_file(self, study_uid: str, sop_uid: str, modality_prefix: str) -> Path:
        """``site/archive/scp_<Study>/<MOD>.<SOP>``, the one real copy of an object."""
        if not _MODALITY_PREFIX.fullmatch(modality_prefix):
            raise BadInput("invalid_modality", "modality prefix is not alphanumeric")
        sop = checked_uid(sop_uid, "sop_uid")
        return self.study_archive_dir(study_uid) / f"{modality_prefix}.{sop}"

    def relative(self, path: Path) -> str:
        """``path`` relative to the data directory, as carried in events."""
        return path.relative_to(self.datadir).as_posix()

    def resolve(self, relative_path: str) -> Path:
        """Inverse of :meth:`relative`; refuses anything that would leave the data directory.

        The check is on the words (absolute paths, ``..``), not the file system: everything
        under the data directory is ours, and realpath() cost more than reading the header.
        """
        normal = posixpath.normpath(relative_path)
        if normal.startswith(("/", "../")) or normal in ("..", "."):
            raise BadInput("path_outside_datadir", "path leaves the data directory")
        return self.datadir / normal

    def ensure(self, shared_group: int | None = None) -> None:
        """Create the directory skeleton (idempotent, never world-writable).

        ``shared_group`` (a group id, SHARED_GROUP): that group may read the data (site/,
        outbox/, quarantine/) and drop files into inbox/; config/ and state/ (tokens, keys,
        NATS' store) stay FIONA's own.
        """
        shared = [
            self.site_dir,
            self.archive_dir,
            self.raw_dir,
            self.participants_dir,
            self.srs_dir,
            self.arrived_dir,
            self.incoming_dir,
            self.outbox_dir,
            self.quarantine_dir,
        ]
        for path in (self.config_dir, self.state_dir, self.inbox_dir, *shared):
            path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if shared_group is None:
            return
        _share(self.datadir, shared_group, DIR_MODE)  # to get in; nothing inherits from it
        for path in shared:
            _share(path, shared_group, SHARED_DIR_MODE)
        _share(self.inbox_dir, shared_group, SHARED_DROP_MODE)


def _share(path: Path, gid: int, mode: int) -> None:
    try:
        os.chown(path, -1, gid)
        os.chmod(path, mode)
    except OSError as err:
        raise ConfigError(
            f"SHARED_GROUP: cannot give {path} to group {gid} ({err.strerror}); "
            "FIONA's user must own it and be a member of the group"
        ) from None


def group_id(name: str | None) -> int | None:
    """The id of a group given by name or number (SHARED_GROUP); None for none."""
    if not name:
        return None
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"SHARED_GROUP: there is no group {name!r} on this machine") from None


def fsync_file(path: Path) -> None:
    """Make a file's written data durable (the file was written and closed elsewhere)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or link inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE, durable: bool = True) -> None:
    """Write ``data`` so that readers see the old file or the whole new one.

    ``durable``: on disk before this returns (fsync of the file and its folder). Scratch files
    that are made again after a crash (the exporter's staging) skip that cost, ~1 ms each.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


_UNSAFE = re.compile(r"[^A-Za-z0-9._^ -]")


def safe_component(value: str, fallback: str = "_") -> str:
    """``value`` as one path component: unsafe characters replaced, never ``.``/``..``/hidden."""
    cleaned = _UNSAFE.sub("_", value.strip())[:64]
    if not cleaned or cleaned.startswith("."):
        return f"{fallback}{short_hash(value)}" if value else fallback
    return cleaned
