"""FIONA settings: an original ``config.json`` as it is, overridden by ``FIONA_*`` environment.

Precedence (highest first): environment ``FIONA_<KEY>`` (nested: ``FIONA_RECEIVER__HTTP_PORT``),
then the config file, then defaults. Unknown config.json keys (``SCANNERIP``, ``CONNECTION``, ...)
are kept in ``extras`` and otherwise ignored; a wrong type is a :class:`ConfigError` naming the key.
"""

import json
import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from fiona_common.errors import ConfigError

DEFAULT_SITE = "default"


def _lower_keys(data: Any) -> Any:
    """config.json keys are upper case (``DICOMPORT``); our fields are lower case."""
    if isinstance(data, dict):
        return {str(k).lower(): v for k, v in data.items()}
    return data


def _split(value: Any) -> list[str]:
    """A list from JSON, from ``"A,B"``, or as it is; blanks dropped."""
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
    return [str(v).strip() for v in value if str(v).strip()]


class AccessRules(BaseModel):
    """Who may open an association to a listener. Empty lists mean: everyone (the original)."""

    # NoDecode: the environment may say "A,B" as well as '["A", "B"]' (see _split).
    allowed_calling_aets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_peers: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)

    @field_validator("allowed_peers", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        return [ip_network(v, strict=False) for v in _split(value)]

    @field_validator("allowed_calling_aets", mode="before")
    @classmethod
    def _parse_aets(cls, value: Any) -> Any:
        return _split(value)


class SiteConfig(AccessRules):
    """One ``SITES.<PROJECT>`` section: its own listener port, AE title and data directory."""

    model_config = ConfigDict(extra="allow")

    dicomport: int
    dicomaetitle: str = "FIONA"
    datadir: Path


class ReceiverSettings(AccessRules):
    """The receiver service (``FIONA_RECEIVER__*``)."""

    http_port: int = 9101
    bind_address: str = "0.0.0.0"
    # Processes sharing the DICOM port through SO_REUSEPORT (one core each).
    workers: int = Field(default=1, ge=1, le=64)
    # Set by worker 0 for the workers it starts; 0 is the one that imports the inbox.
    worker_index: int = Field(default=0, ge=0)
    max_pdu_bytes: int = Field(default=262_144, ge=0)
    max_associations: int = Field(default=32, ge=1)
    # An association silent this long (mid-object too) is aborted, freeing its slot.
    idle_timeout_seconds: float = Field(default=60.0, gt=0)
    enabled_poll_seconds: float = Field(default=1.0, gt=0)
    # An inbox file is imported once its size and mtime stayed unchanged this long.
    inbox_settle_seconds: float = Field(default=2.0, ge=0)
    # Events kept in memory while NATS is away; beyond this the archive is rescanned instead.
    max_pending_events: int = Field(default=50_000, ge=100)
    # Disk reserve: a C-STORE is refused with "out of resources" before anything is written
    # while free space is below the larger of both (what is stored stays intact; 0: off).
    min_free_bytes: int = Field(default=0, ge=0)
    min_free_percent: float = Field(default=2.0, ge=0, lt=100)
    # DICOM TLS (docs/admin-guide.md): a second port of the main listener, next to the plain
    # DICOMPORT (2762 is the standard's); None: no TLS. PEM files, read at start.
    tls_port: int | None = Field(default=None, ge=1, le=65535)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # CA that senders' certificates are checked against. Mutual TLS is the default, as the
    # DICOM TLS profiles expect; false: senders need no certificate (one they show is checked).
    tls_ca_file: Path | None = None
    tls_require_client_cert: bool = True
    # A connection that has not finished its TLS handshake by then is closed.
    tls_handshake_timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _tls_consistent(self) -> "ReceiverSettings":
        for problem in _receiver_tls_problems(self):
            raise ConfigError(problem)
        return self


def _receiver_tls_problems(rx: ReceiverSettings) -> list[str]:
    """What is wrong with the receiver's TLS settings, one line each (files: checked at start)."""
    files_set = rx.tls_cert_file or rx.tls_key_file or rx.tls_ca_file
    if rx.tls_port is None:
        return ["RECEIVER.TLS_*_FILE are set but RECEIVER.TLS_PORT is not"] if files_set else []
    problems = []
    if rx.tls_cert_file is None or rx.tls_key_file is None:
        problems.append("RECEIVER.TLS_PORT needs RECEIVER.TLS_CERT_FILE and RECEIVER.TLS_KEY_FILE")
    if rx.tls_require_client_cert and rx.tls_ca_file is None:
        problems.append(
            "RECEIVER.TLS_REQUIRE_CLIENT_CERT needs RECEIVER.TLS_CA_FILE (the CA of the senders' "
            "certificates), or set it to false"
        )
    return problems


class ClassifierSettings(BaseModel):
    """The classifier service (``FIONA_CLASSIFIER__*``)."""

    http_port: int = 9102
    # A classifyRules.json in the original format; empty: the project's default rule set.
    rules_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)


class ArrivalSettings(BaseModel):
    """The arrival service (``FIONA_ARRIVAL__*``): when series and studies are complete."""

    http_port: int = 9103
    quiet_seconds: float = Field(default=15.0, gt=0)
    # None: the longest quiet period of the study's series.
    study_quiet_seconds: float | None = Field(default=None, gt=0)
    # After the count a series announced has arrived, wait this long for stragglers.
    grace_seconds: float = Field(default=2.0, ge=0)
    # Open longer than this (from its first instance): completed as "timeout-incomplete".
    max_open_seconds: float = Field(default=3600.0, gt=0)
    # Quiet periods per calling AE title and per project (SITES name); the project wins.
    quiet_seconds_by_aet: dict[str, float] = Field(default_factory=dict)
    quiet_seconds_by_site: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)


class RedcapSettings(BaseModel):
    """REDCap as the system of record (``FIONA_REDCAP_SYNC__REDCAP__*``); no url: local mode."""

    # The API address, ending in /api/ (https://redcap.example.org/api/).
    url: str | None = None
    # TLS is always verified; a CA bundle for a hospital CA (None: the system's trust store).
    ca_bundle: Path | None = None
    # One token file per REDCap project: incoming, projects, routing, coupling, autoid and
    # project.<NAME> (a research project's own REDCap); empty: <DATADIR>/state/secrets/redcap.
    tokens_dir: Path | None = None
    # A research project's own REDCap on another server: project name -> its /api/ address.
    project_urls: dict[str, str] = Field(default_factory=dict)
    sync_seconds: float = Field(default=300.0, gt=0)  # how often projects, rules, lists are read
    chunk: int = Field(default=100, ge=1, le=1000)  # records (rows) per API call
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry_seconds: float = Field(default=30.0, ge=0.1)  # a pending write is tried again after

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)

    @field_validator("url", "project_urls")
    @classmethod
    def _api_address(cls, value: Any) -> Any:
        for url in value.values() if isinstance(value, dict) else [value]:
            if url is not None and not url.startswith(("https://", "http://")):
                raise ValueError(f"{url!r} is not an http(s) address")
            if url is not None and not url.endswith("/api/"):
                raise ValueError(f"{url!r}: a REDCap API address ends in /api/")
        return value


class RedcapSyncSettings(BaseModel):
    """The redcap_sync service (``FIONA_REDCAP_SYNC__*``): projects, routing, assignment."""

    http_port: int = 9104
    # Projects and routing rules (JSON); empty: <DATADIR>/config/projects.json.
    projects_file: Path | None = None
    # Secret for the keyed hashes of patient identifiers (AutoID lookup, registry); empty:
    # <DATADIR>/state/secrets/identity.key, created on first use (mode 0600).
    key_file: Path | None = None
    # Bearer token of the HTTP API (/api/...); empty: the API is off.
    api_token_file: Path | None = None
    coupling_max_age_days: float = Field(default=14.0, gt=0)
    # A failed transfer is requested again this many times, then given up.
    max_attempts: int = Field(default=3, ge=1)
    retry_delay_seconds: float = Field(default=300.0, ge=0)
    # How often unassigned studies are tried again (a coupling list or rule may have come).
    reevaluate_seconds: float = Field(default=60.0, gt=0)
    redcap: RedcapSettings = Field(default_factory=RedcapSettings)

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)


class ExporterSettings(BaseModel):
    """The exporter service (``FIONA_EXPORTER__*``): pseudonymize and deliver."""

    http_port: int = 9105
    # Secret for UID mapping and date offsets; empty: <DATADIR>/state/secrets/deid.key (0600).
    key_file: Path | None = None
    # De-identified copies wait here until delivered; empty: <DATADIR>/state/staging.
    staging_dir: Path | None = None
    # Transient failures (destination down, out of resources) are retried this many times,
    # the delay doubling from retry_seconds up to max_retry_seconds; then the request fails.
    max_attempts: int = Field(default=6, ge=1)
    retry_seconds: float = Field(default=10.0, ge=0)
    max_retry_seconds: float = Field(default=600.0, ge=0)
    calling_aet: str = "FIONA"
    outbox_archive: bool = False  # also one .zip per study with a .sha256 file
    # A request a dead replica held goes to another one after this (live ones renew it).
    ack_wait_seconds: float = Field(default=60.0, gt=1)
    verify: bool = True  # C-FIND the destination afterwards and compare the counts

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)


class PacsNode(BaseModel):
    """A PACS FIONA queries and retrieves from (``PACS_NODES.<NAME>``, ``fiona pacs``)."""

    aet: str = Field(min_length=1, max_length=16)  # the node's AE title (called)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    # FIONA's AE title towards this node; None: DICOMAETITLE.
    calling_aet: str | None = Field(default=None, max_length=16)
    # The AE title the node knows FIONA by as C-MOVE destination; None: the AE title of the
    # listener (SITES project) the study is retrieved into.
    move_aet: str | None = Field(default=None, max_length=16)
    # DICOM over TLS, as for DICOM destinations: the node's certificate is checked against
    # tls_ca_file (None: the system's trust store); cert/key present FIONA's own when asked.
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    heartbeat: bool = True  # checked by the heartbeat (C-ECHO)

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)


class HeartbeatSettings(BaseModel):
    """The heartbeat process (``FIONA_HEARTBEAT__*``): checks every configured peer."""

    http_port: int = 9106
    interval_seconds: float = Field(default=60.0, gt=0)  # the original's heartbeat: every minute
    timeout_seconds: float = Field(default=10.0, gt=0)  # per check (the original's echoscu: 10 s)

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)


class JanitorSettings(BaseModel):
    """Housekeeping (``FIONA_JANITOR__*``, ``fiona janitor``): disk space, stale links, staging."""

    http_port: int = 9107
    # Above high water, delivered studies are deleted (oldest first) until below low water.
    high_water_percent: float = Field(default=85.0, gt=0, le=100)
    low_water_percent: float = Field(default=75.0, gt=0, le=100)
    min_age_days: float = Field(default=7.0, ge=0)  # no study younger than this is deleted
    staging_max_age_days: float = Field(default=3.0, gt=0)  # leftover staging/export folders
    interval_seconds: float = Field(default=3600.0, gt=0)  # how often ``fiona up`` runs it

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)

    @model_validator(mode="after")
    def _water_marks(self) -> "JanitorSettings":
        if self.low_water_percent > self.high_water_percent:
            raise ValueError("LOW_WATER_PERCENT must not be above HIGH_WATER_PERCENT")
        return self


class NatsSettings(BaseModel):
    """Credentials and TLS towards NATS_URL (``FIONA_NATS__*``), see docs/admin-guide.md.

    Secrets come from files (a mounted Secret) or, the password, from the environment; they
    are never logged nor part of an error message.
    """

    # At most one way to log in: user + password, an nkey seed, or a .creds file.
    user: str | None = None
    password: SecretStr | None = None  # FIONA_NATS__PASSWORD, or:
    password_file: Path | None = None
    nkey_seed_file: Path | None = None  # an nkey user's seed (SU...), as ``nk -gen user`` makes
    creds_file: Path | None = None  # a JWT user's .creds file (operator mode, made by ``nsc``)
    # The server's certificate is checked against tls_ca_file (None: the system's trust
    # store); cert and key are FIONA's own for a server that verifies clients (mutual TLS).
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # The name the server's certificate carries, when it is not the host of NATS_URL.
    tls_hostname: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _lower(cls, data: Any) -> Any:
        return _lower_keys(data)

    @model_validator(mode="after")
    def _consistent(self) -> "NatsSettings":
        # ConfigError, not ValueError: pydantic's message would repeat the input (the password).
        for problem in _nats_problems(self):
            raise ConfigError(problem)
        return self

    @property
    def configured(self) -> bool:
        """Anything set at all (credentials or TLS)."""
        return any(value is not None for value in self.__dict__.values())


def _nats_problems(nats: NatsSettings) -> list[str]:
    """What is wrong with ``nats``, one line each, naming settings and files, never secrets."""
    has_password = nats.password is not None or nats.password_file is not None
    problems = []
    if nats.password is not None and nats.password_file is not None:
        problems.append("NATS.PASSWORD_FILE and FIONA_NATS__PASSWORD are both set: keep one")
    if has_password and nats.user is None:
        problems.append("a NATS password is set (NATS.PASSWORD_FILE/PASSWORD) but NATS.USER is not")
    if nats.user is not None and not has_password:
        problems.append("NATS.USER needs NATS.PASSWORD_FILE or FIONA_NATS__PASSWORD")
    methods = [nats.user, nats.nkey_seed_file, nats.creds_file]
    if sum(method is not None for method in methods) > 1:
        problems.append(
            "NATS.USER, NATS.NKEY_SEED_FILE and NATS.CREDS_FILE are different ways to log in: "
            "set one of them"
        )
    if (nats.tls_cert_file is None) != (nats.tls_key_file is None):
        problems.append("NATS.TLS_CERT_FILE and NATS.TLS_KEY_FILE go together: set both or none")
    files = {
        "PASSWORD_FILE": nats.password_file,
        "NKEY_SEED_FILE": nats.nkey_seed_file,
        "CREDS_FILE": nats.creds_file,
        "TLS_CA_FILE": nats.tls_ca_file,
        "TLS_CERT_FILE": nats.tls_cert_file,
        "TLS_KEY_FILE": nats.tls_key_file,
    }
    for key, path in files.items():
        if path is not None:
            try:
                with path.open("rb"):
                    pass
            except OSError as err:
                problems.append(f"NATS.{key}: cannot read {path} ({err.strerror or err})")
    return problems


class Settings(BaseSettings):
    """All of FIONA's settings; built once per process by :meth:`load`."""

    model_config = SettingsConfigDict(
        env_prefix="FIONA_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
    )

    datadir: Path = Path("data")
    dicomport: int = 11112
    dicomip: str = "127.0.0.1"
    dicomaetitle: str = "FIONA"
    sites: dict[str, SiteConfig] = Field(default_factory=dict)
    processing_user: str | None = None
    # A group (name or id) that may read the data and drop files into inbox/ (Layout.ensure).
    shared_group: str | None = None
    # None: ``fiona up`` starts a local nats-server on ``local_nats_port``.
    nats_url: str | None = None
    local_nats_port: int = 4222
    # Credentials and TLS for nats_url (FIONA_NATS__*); the local nats-server needs none.
    nats: NatsSettings = Field(default_factory=NatsSettings)
    http_host: str = "0.0.0.0"
    log_level: str = "INFO"
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    arrival: ArrivalSettings = Field(default_factory=ArrivalSettings)
    redcap_sync: RedcapSyncSettings = Field(default_factory=RedcapSyncSettings)
    exporter: ExporterSettings = Field(default_factory=ExporterSettings)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)
    janitor: JanitorSettings = Field(default_factory=JanitorSettings)
    # PACS nodes by name (fiona pacs NAME ..., heartbeat); FIONA_PACS_NODES as JSON.
    pacs_nodes: dict[str, PacsNode] = Field(default_factory=dict)
    config_file: Path | None = None
    extras: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The config file arrives as init values: the environment must win over it.
        return env_settings, init_settings, file_secret_settings

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> "Settings":
        """Read ``config_file`` (or ``$FIONA_CONFIG``), apply the environment, validate.

        ``overrides`` (from command-line flags) win over both.
        """
        path = config_file or _env_path("FIONA_CONFIG")
        values = read_config_file(path) if path else {}
        known = {k: v for k, v in values.items() if k in cls.model_fields}
        extras = {k: v for k, v in values.items() if k not in cls.model_fields}
        try:
            settings = cls(**known, extras=extras, config_file=path)
            if overrides:
                settings = settings.model_copy(update=overrides)
        except ValidationError as err:
            raise ConfigError(_describe(err, path)) from None
        except (SettingsError, json.JSONDecodeError) as err:
            raise ConfigError(f"environment: {err}") from None
        settings.datadir = settings.datadir.expanduser().resolve()
        return settings

    @model_validator(mode="after")
    def _nats_credentials_need_url(self) -> "Settings":
        if self.nats.configured and not self.nats_url:
            raise ConfigError(
                "NATS credentials or TLS (FIONA_NATS__*) are set but NATS_URL is not: they are "
                "for a NATS server of yours; the local one `fiona up` starts needs none"
            )
        return self

    def listeners(self) -> list["Listener"]:
        """The DICOM listeners to open: the main one, then one per ``SITES`` project."""
        main = Listener(
            name=DEFAULT_SITE,
            port=self.dicomport,
            aetitle=self.dicomaetitle,
            datadir=self.datadir,
            access=AccessRules.model_validate(self.receiver.model_dump()),
        )
        sites = [
            Listener(
                name=name,
                port=site.dicomport,
                aetitle=site.dicomaetitle,
                datadir=site.datadir.expanduser().resolve(),
                access=AccessRules.model_validate(site.model_dump()),
            )
            for name, site in self.sites.items()
            if name not in ("", "ABCD")  # the original's spelling of "the default project"
        ]
        return [main, *sites]


class Listener(BaseModel):
    """One DICOM listener: port, AE title, data directory and access rules."""

    name: str
    port: int
    aetitle: str
    datadir: Path
    access: AccessRules


def read_config_file(path: Path) -> dict[str, Any]:
    """config.json as a dict with lower-case keys; a clear error if it is unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"config file {path} is not readable JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    lowered: dict[str, Any] = _lower_keys(data)
    if lowered.get("datadir") is None:
        lowered.pop("datadir", None)  # the original wrote null for "the default"
    return lowered


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _describe(err: ValidationError, path: Path | None) -> str:
    first = err.errors()[0]
    key = ".".join(str(part).upper() for part in first["loc"]) or "(root)"
    origin = f" (config file {path} or environment FIONA_*)" if path else " (environment FIONA_*)"
    # A password that failed validation stays out of the message (it ends up in logs).
    got = "" if "PASSWORD" in key else f" (got {first.get('input')!r})"
    return f"setting {key}{origin}: {first['msg']}{got}"
