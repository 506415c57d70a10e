"""Where and how FIONA reaches NATS: the URL plus credentials and TLS, built from the settings.

Every NATS connection (services, CLI commands, backup) is made from a :class:`NatsTarget` that
:func:`nats_target` built, so none goes without the configured credentials. A target prints as
its URL with any password masked; the secrets in its options never appear in its repr.
"""

import importlib.util
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.errors import AuthorizationError

from fiona_common.errors import ConfigError
from fiona_common.secret_files import read_secret
from fiona_common.settings import NatsSettings, Settings

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class NatsTarget:
    """A NATS URL and the nats.connect keyword options (credentials, TLS) that go with it."""

    url: str = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:
        return masked_url(self.url)

    def __repr__(self) -> str:
        return f"NatsTarget({masked_url(self.url)!r}, options={sorted(self.options)})"

    def connect_options(self) -> dict[str, Any]:
        """``servers`` and the credential/TLS keywords for ``nats.connect``."""
        return {"servers": [self.url], **self.options}


def as_target(target: "NatsTarget | str") -> NatsTarget:
    """A plain URL is a NATS without credentials (tests, the local nats-server)."""
    return target if isinstance(target, NatsTarget) else NatsTarget(target)


def nats_target(settings: Settings, url: str | None = None) -> NatsTarget:
    """``url`` (default: NATS_URL, else the local default) with the configured credentials."""
    return NatsTarget(url or settings.nats_url or DEFAULT_NATS_URL, connect_options(settings.nats))


def connect_options(nats: NatsSettings) -> dict[str, Any]:
    """The ``nats.connect`` keywords for credentials and TLS (files are read now)."""
    options: dict[str, Any] = {}
    if nats.user is not None:
        options["user"] = nats.user
        options["password"] = _password(nats)
    if nats.nkey_seed_file is not None or nats.creds_file is not None:
        _need_nkeys()
    if nats.nkey_seed_file is not None:
        options["nkeys_seed"] = str(nats.nkey_seed_file)  # nats-py reads it when signing
    if nats.creds_file is not None:
        options["user_credentials"] = str(nats.creds_file)
    context = tls_context(nats)
    if context is not None:
        options["tls"] = context
    if nats.tls_hostname is not None:
        options["tls_hostname"] = nats.tls_hostname
    return options


def _password(nats: NatsSettings) -> str:
    if nats.password is not None:
        return nats.password.get_secret_value()
    if nats.password_file is None:  # ruled out by NatsSettings' validation
        raise ConfigError("NATS.USER needs NATS.PASSWORD_FILE or FIONA_NATS__PASSWORD")
    return read_secret(nats.password_file, "NATS password", min_length=1).decode()


def _need_nkeys() -> None:
    # nats-py signs the server's challenge with nkeys, an optional dependency of nats-py.
    if importlib.util.find_spec("nkeys") is None:
        raise ConfigError(
            "NATS.NKEY_SEED_FILE and NATS.CREDS_FILE need the Python package nkeys "
            "(pip install 'nats-py[nkeys]')"
        )


def tls_context(nats: NatsSettings) -> ssl.SSLContext | None:
    """A verifying TLS context with the configured CA and client certificate (None: nothing
    configured; nats-py then uses the system's trust store if the server asks for TLS)."""
    if nats.tls_ca_file is None and nats.tls_cert_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=_path(nats.tls_ca_file))
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(
            f"NATS.TLS_CA_FILE: {nats.tls_ca_file} is no PEM CA file ({err})"
        ) from None
    if nats.tls_cert_file is not None:
        try:
            context.load_cert_chain(nats.tls_cert_file, nats.tls_key_file)
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(
                f"NATS.TLS_CERT_FILE/TLS_KEY_FILE: {nats.tls_cert_file} and "
                f"{nats.tls_key_file} are no matching PEM certificate and key ({err})"
            ) from None
    return context


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def masked_url(url: str) -> str:
    """``url`` fit for logs: a password in it (``nats://user:pw@host``) becomes ``***``, and so
    does a token (``nats://token@host``), the secret itself."""
    return ",".join(_masked(part) for part in url.split(","))


def _masked(url: str) -> str:
    parts = urlsplit(url.strip())
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, has_password, _ = userinfo.partition(":")
    shown = f"{user}:***" if has_password else "***"
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


def refusal(err: BaseException) -> str | None:
    """Why NATS turned FIONA away, if ``err`` says it did: credentials or TLS that no retry
    fixes. None: anything else, such as NATS being down or restarting."""
    text = str(err).lower()
    if isinstance(err, AuthorizationError) or "authorization violation" in text:
        return "NATS refused the credentials (Authorization Violation)"
    if "authentication" in text:  # "Authentication Timeout", "authentication expired"
        return f"NATS refused the credentials ({str(err).removeprefix('nats: ')})"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"the NATS server's certificate is not trusted ({err.verify_message})"
    if isinstance(err, ssl.SSLError):
        return f"TLS with NATS failed ({err.reason or err})"
    return None


def refused(target: NatsTarget, err: BaseException) -> ConfigError | None:
    """The error to raise when ``err`` means NATS at ``target`` refused FIONA (see above)."""
    reason = refusal(err)
    return None if reason is None else ConfigError(f"{reason}: NATS at {target}")
