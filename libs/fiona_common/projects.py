"""Research projects and routing rules, from the projects file (the original DataTransferProjects
and Routing registries, as far as processing needs them).

The file is JSON: ``{"projects": [...], "routing": [...]}``; its fields are documented in
docs/projects.md. :func:`parse_catalog` refuses a bad file with one message naming the project
(or routing rule) and the field.
"""

import json
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fiona_common.errors import ConfigError
from fiona_common.layout import DIR_MODE, FILE_MODE, write_atomic
from fiona_common.settings import Settings
from fiona_common.watched import WatchedFile, read_text

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Destination(Strict):
    """Where a project's pseudonymized studies go."""

    kind: Literal["dicom", "outbox", "sftp"]
    aet: str | None = Field(default=None, max_length=16)
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)  # sftp: 22 when not given
    # DICOM nodes: associations one exporter process opens at once, and an optional rate limit
    # (also the upload limit of an SFTP destination).
    max_associations: int = Field(default=2, ge=1, le=32)
    max_bytes_per_second: int | None = Field(default=None, ge=1)
    # DICOM over TLS: the node's certificate is checked against tls_ca_file (None: the system's
    # trust store); tls_cert_file/tls_key_file present FIONA's own certificate when asked.
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # SFTP servers (docs/projects.md): a login key (its passphrase, if any, in passphrase_file;
    # both secret files), the server's host key checked against known_hosts_file (None:
    # ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts), never accepted unseen.
    user: str | None = None
    key_file: Path | None = None
    passphrase_file: Path | None = None
    known_hosts_file: Path | None = None
    remote_dir: str = "."
    package: Literal["archive", "folder"] = "archive"  # a .zip (+ .sha256) or the folder tree
    # read_back: size and SHA-256 read back through SFTP; md5_file/sha256_file: a checksum file
    # the server writes next to the upload (named + checksum_suffix), as the original's DAIC did.
    confirm: Literal["read_back", "md5_file", "sha256_file"] = "read_back"
    checksum_suffix: str | None = Field(default=None, pattern=r"^\.[A-Za-z0-9_.-]{1,32}$")
    confirm_timeout_seconds: float = Field(default=300.0, gt=0)
    # Uploads only start in this daily window, local time ("22:00-06:00"); None: at once.
    window: str | None = Field(
        default=None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"
    )

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "Destination":
        if self.kind == "dicom" and not (self.aet and self.host and self.port):
            raise ValueError("a dicom destination needs aet, host and port")
        if self.kind == "sftp" and not (self.host and self.user and self.key_file):
            raise ValueError("an sftp destination needs host, user and key_file")
        if self.confirm != "read_back" and self.package != "archive":
            raise ValueError(f"confirm {self.confirm} needs package archive")
        return self

    def seconds_until_window(self, seconds_into_day: float) -> float:
        """0 when uploads may start now (inside the window, or none set), else the seconds
        until the window opens; ``seconds_into_day`` is the local time of day."""
        if self.window is None:
            return 0.0
        start, end = (int(hhmm[:2]) * 3600 + int(hhmm[3:]) * 60 for hhmm in self.window.split("-"))
        now = seconds_into_day % 86400
        inside = start <= now < end if start <= end else (now >= start or now < end)
        return 0.0 if inside or start == end else (start - now) % 86400


class AutoId(Strict):
    enabled: bool = False
    called_aet: str | None = None  # studies sent to this AE title get an automatic pseudonym

    @model_validator(mode="after")
    def _needs_aet(self) -> "AutoId":
        if self.enabled and not self.called_aet:
            raise ValueError("enabled AutoID needs called_aet")
        return self


class Deidentification(Strict):
    """Handed to the de-identification engine (its issue defines profiles and options)."""

    profile: str = "recommended"  # TCIA practice; "basic" and "fiona" are the others
    options: list[str] = Field(default_factory=list)
    # Private elements kept with retain-safe-private, e.g. "SIEMENS CSA HEADER:0029,xx10"
    # (docs/deid.md); empty: the built-in list (Siemens diffusion and CSA headers).
    safe_private: list[str] = Field(default_factory=list)
    date_shift_days: int = 42


class Features(Strict):
    drop_presentation_states: bool = False
    drop_secondary_captures: bool = False
    never_mask_burned_in: bool = False


class HeaderRewrite(Strict):
    """Rewrite one element with a regex: the result is its capture groups, joined."""

    tag: str
    regex: str

    @field_validator("regex")
    @classmethod
    def _groups(cls, value: str) -> str:
        _regex(value)
        if re.compile(value).groups < 1:
            raise ValueError("needs at least one capture group (what is kept)")
        return value


class Project(Strict):
    name: str = Field(pattern=_NAME, description="also the InstitutionName downstream")
    active: bool = True
    approval_start: date | None = None
    approval_end: date | None = None
    participant_pattern: str = Field(description="regex every pseudonym must fully match")
    autoid: AutoId = Field(default_factory=AutoId)
    deidentification: Deidentification = Field(default_factory=Deidentification)
    features: Features = Field(default_factory=Features)
    header_rewrite: HeaderRewrite | None = None
    destinations: list[Destination] = Field(min_length=1)

    @field_validator("participant_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str | None:
        return _regex(value)

    def refuses(self, today: date) -> str | None:
        """Why no new transfer may start for this project today, or None."""
        if not self.active:
            return f"project {self.name} is not active"
        if self.approval_start and today < self.approval_start:
            return f"project {self.name}: ethics approval starts {self.approval_start}"
        if self.approval_end and today > self.approval_end:
            return f"project {self.name}: ethics approval ended {self.approval_end}"
        return None

    def refuses_subject(self, subject: str) -> str | None:
        if not subject or re.fullmatch(self.participant_pattern, subject) is None:
            return f"participant ID does not match project {self.name}'s pattern"
        return None


class RoutingRule(Strict):
    """A trusted sender's studies go to a project (original Routing)."""

    description: str = ""
    active: bool = True
    called_aet: str | None = None  # None: any
    calling_aet: str | None = None  # None: any
    patient_id_regex: str | None = None  # matched at the start, as in the original
    patient_name_regex: str | None = None
    project: str
    event: str = ""

    @field_validator("patient_id_regex", "patient_name_regex")
    @classmethod
    def _patterns(cls, value: str | None) -> str | None:
        return _regex(value)


class ProjectDefaults(Strict):
    """For projects defined only in REDCap (which knows nothing of destinations)."""

    destinations: list[Destination] = Field(default_factory=list)
    deidentification: Deidentification = Field(default_factory=Deidentification)


class Catalog(Strict):
    projects: list[Project] = Field(default_factory=list)
    routing: list[RoutingRule] = Field(default_factory=list)
    defaults: ProjectDefaults | None = None

    @property
    def by_name(self) -> dict[str, Project]:
        return {p.name: p for p in self.projects}


def parse_catalog(text: str, source: str = "<projects>") -> Catalog:
    """Read and check a projects file; :class:`ConfigError` naming project and field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: not valid JSON: {err.msg} (line {err.lineno})") from None
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err, raw)}") from None
    names = [p.name for p in catalog.projects]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{source}: project {name!r} (projects[{i}]) is defined twice")
    for i, rule in enumerate(catalog.routing):
        if rule.project not in names:
            where = f"routing[{i}] ({rule.description or 'no description'}), field project"
            raise ConfigError(f"{source}: {where}: no project named {rule.project!r}")
    return catalog


def _describe(err: ValidationError, raw: Any) -> str:
    first = err.errors()[0]
    loc = [str(x) for x in first["loc"]]
    where = ".".join(loc) or "the file"
    if len(loc) >= 2 and loc[0] == "projects" and loc[1].isdigit():
        entry = raw["projects"][int(loc[1])] if isinstance(raw, dict) else {}
        name = entry.get("name", "?") if isinstance(entry, dict) else "?"
        field = ".".join(loc[2:]) or "(the entry)"
        where = f"project {name!r} (projects[{loc[1]}]), field {field}"
    elif len(loc) >= 2 and loc[0] == "routing" and loc[1].isdigit():
        field = ".".join(loc[2:]) or "(the entry)"
        where = f"routing[{loc[1]}], field {field}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def admin_projects_path(settings: Settings) -> Path:
    """The projects file the admin writes."""
    return settings.redcap_sync.projects_file or settings.datadir / "config" / "projects.json"


def projects_path(settings: Settings) -> Path:
    """The projects file redcap_sync, the exporter and ``fiona deid`` read.

    With REDCap configured, redcap_sync merges the admin's file with the projects and rules read
    from REDCap into ``state/redcap/projects.json``; until its first merge that file is a copy
    of the admin's (so the exporter can start first).
    """
    admin = admin_projects_path(settings)
    if settings.redcap_sync.redcap.url is None:
        return admin
    merged = settings.datadir / "state" / "redcap" / "projects.json"
    if not merged.exists() and admin.exists():
        merged.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        write_atomic(merged, admin.read_bytes(), FILE_MODE)
    return merged


def load_catalog(path: Path) -> Catalog:
    return parse_catalog(read_text(path), str(path))


def watch_catalog(path: Path) -> WatchedFile[Catalog]:
    """The projects file, reloaded when it changes (a broken version is refused)."""
    return WatchedFile(path, lambda text: parse_catalog(text, str(path)), "projects file")
