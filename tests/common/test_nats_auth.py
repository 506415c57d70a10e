"""NATS with credentials and TLS: settings, masking, and real nats-servers that demand them.

Each server gets a configuration file written here; its certificates and nkeys are made by
the test. A refused login is a :class:`ConfigError` (no retry fixes a wrong password), and
no secret ever reaches a log record or an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest

from fiona_common.bus import ConsumerSpec, connect
from fiona_common.errors import ConfigError
from fiona_common.messages import InstanceStored
from fiona_common.nats_auth import NatsTarget, masked_url, nats_target
from fiona_common.settings import Settings
from tests.builders import instance_stored
from tests.certificates import TlsFiles, mutual_tls
from tests.fiona_process import REPO, Classifier
from tests.peers import NatsServer

PASSWORD = "pw-Zq7-never-in-logs"


def secret_file(path: Path, content: str) -> Path:
    path.write_text(content + "\n")
    path.chmod(0o600)
    return path


def settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


def configured_server(tmp_path: Path, config: str) -> NatsServer:
    path = tmp_path / "nats.conf"
    path.write_text(config)
    return NatsServer(tmp_path / "nats", config=path).start()


def user_nkey() -> tuple[str, str]:
    """A new nkey user: (seed, public key)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public: bytes = nkeys.from_seed(bytearray(seed)).public_key
    return seed.decode(), public.decode()


async def round_trip(nats: NatsTarget) -> None:
    """Publish an event and consume it back through FIONA's bus."""
    bus = await connect(nats, "test")
    try:
        await bus.ensure_streams()
        await bus.publish(instance_stored("1.2.3.4.5"))
        seen: list[str] = []
        stop = asyncio.Event()

        async def handler(event: InstanceStored) -> None:
            seen.append(event.sop_uid)
            stop.set()

        spec = ConsumerSpec(durable="auth-test")
        await asyncio.wait_for(bus.consume(InstanceStored, spec, handler, stop), 10)
        assert seen == ["1.2.3.4.5"]
    finally:
        await bus.close()


async def refused(nats: NatsTarget) -> str:
    with pytest.raises(ConfigError) as err:
        await asyncio.wait_for(connect(nats, "test"), 10)
    return str(err.value)


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the log records carry, extras included."""
    return "\n".join(repr(vars(record)) + record.getMessage() for record in caplog.records)


# --- settings -------------------------------------------------------------------------------


def test_masked_url_hides_passwords_and_tokens() -> None:
    assert masked_url("nats://fiona:s3cret@nats:4222") == "nats://fiona:***@nats:4222"
    assert masked_url("tls://t0ken@nats:4222") == "tls://***@nats:4222"
    assert masked_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    target = NatsTarget("nats://fiona:s3cret@nats:4222", {"password": "other"})
    assert "s3cret" not in f"{target} {target!r}" and "other" not in repr(target)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PASSWORD": PASSWORD}, "NATS.USER is not"),
        ({"USER": "fiona"}, "NATS.USER needs NATS.PASSWORD_FILE"),
        (
            {"USER": "fiona", "PASSWORD": PASSWORD, "NKEY_SEED_FILE": "{tmp}/seed"},
            "different ways to log in",
        ),
        (
            {"PASSWORD": PASSWORD, "PASSWORD_FILE": "{tmp}/seed", "USER": "fiona"},
            "both set",
        ),
        ({"TLS_CERT_FILE": "{tmp}/cert.pem"}, "TLS_CERT_FILE and NATS.TLS_KEY_FILE go together"),
    ],
)
def test_inconsistent_settings_are_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    secret_file(tmp_path / "seed", "SUAAA")
    secret_file(tmp_path / "cert.pem", "not read here")
    nats = {f"FIONA_NATS__{k}": v.format(tmp=tmp_path) for k, v in env.items()}
    with pytest.raises(ConfigError, match=says) as err:
        settings(monkeypatch, {"FIONA_NATS_URL": "nats://nats:4222", **nats})
    assert PASSWORD not in str(err.value) and "\n" not in str(err.value)


def test_an_unreadable_file_is_named_but_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.creds"
    with pytest.raises(ConfigError, match=f"NATS.CREDS_FILE: cannot read {missing}"):
        settings(
            monkeypatch, {"FIONA_NATS_URL": "nats://n:4222", "FIONA_NATS__CREDS_FILE": str(missing)}
        )
    not_pem = secret_file(tmp_path / "ca.pem", PASSWORD)
    monkeypatch.delenv("FIONA_NATS__CREDS_FILE")
    loaded = settings(monkeypatch, {"FIONA_NATS__TLS_CA_FILE": str(not_pem)})
    with pytest.raises(ConfigError, match="NATS.TLS_CA_FILE") as err:
        nats_target(loaded)
    assert PASSWORD not in str(err.value)


def test_credentials_need_a_nats_url_of_ones_own(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"FIONA_NATS__USER": "fiona", "FIONA_NATS__PASSWORD": PASSWORD}
    with pytest.raises(ConfigError, match="NATS_URL is not"):
        settings(monkeypatch, env)


def test_the_local_nats_server_gets_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    target = nats_target(Settings.load(), "nats://127.0.0.1:4222")
    assert target.connect_options() == {"servers": ["nats://127.0.0.1:4222"]}


def test_a_password_in_the_config_file_that_fails_validation_is_not_echoed(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"NATS_URL": "nats://n:4222", "NATS": {"PASSWORD": 123456}}))
    with pytest.raises(ConfigError, match="NATS.PASSWORD") as err:
        Settings.load(config)
    assert "123456" not in str(err.value)


# --- real servers ---------------------------------------------------------------------------


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[NatsServer]:
    users = f'users = [{{user: fiona, password: "{PASSWORD}"}}]'
    server = configured_server(tmp_path, f"authorization {{ {users} }}\n")
    try:
        yield server
    finally:
        server.stop()


async def test_user_and_password(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    password_server: NatsServer,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = secret_file(tmp_path / "password", PASSWORD)
    env = {
        "FIONA_NATS_URL": password_server.url,
        "FIONA_NATS__USER": "fiona",
        "FIONA_NATS__PASSWORD_FILE": str(good),
    }
    await round_trip(nats_target(settings(monkeypatch, env)))

    wrong = secret_file(tmp_path / "wrong", "not-" + PASSWORD)
    monkeypatch.setenv("FIONA_NATS__PASSWORD_FILE", str(wrong))
    message = await refused(nats_target(Settings.load()))
    assert "refused the credentials" in message and password_server.url in message

    assert "refused the credentials" in await refused(NatsTarget(password_server.url))
    assert PASSWORD not in logged(caplog) + message


async def test_a_password_in_the_url_is_masked_in_errors(
    caplog: pytest.LogCaptureFixture, password_server: NatsServer
) -> None:
    url = f"nats://fiona:wrong-{PASSWORD}@127.0.0.1:{password_server.port}"
    message = await refused(NatsTarget(url))
    assert f"fiona:***@127.0.0.1:{password_server.port}" in message
    assert PASSWORD not in message + logged(caplog)
    await round_trip(NatsTarget(f"nats://fiona:{PASSWORD}@127.0.0.1:{password_server.port}"))


async def test_nkey_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seed, public = user_nkey()
    server = configured_server(tmp_path, f'authorization {{ users = [{{nkey: "{public}"}}] }}\n')
    try:
        seed_file = secret_file(tmp_path / "fiona.nk", seed)
        env = {"FIONA_NATS_URL": server.url, "FIONA_NATS__NKEY_SEED_FILE": str(seed_file)}
        await round_trip(nats_target(settings(monkeypatch, env)))

        other_seed, _ = user_nkey()
        monkeypatch.setenv(
            "FIONA_NATS__NKEY_SEED_FILE", str(secret_file(tmp_path / "o", other_seed))
        )
        message = await refused(nats_target(Settings.load()))
        assert "refused the credentials" in message
        assert seed not in logged(caplog) + message and other_seed not in logged(caplog)
    finally:
        server.stop()


def tls_config(tls: TlsFiles, extra: str) -> str:
    return (
        f'tls {{ cert_file: "{tls.server_cert}", key_file: "{tls.server_key}", '
        f'ca_file: "{tls.ca}", {extra} }}\n'
    )


async def test_mutual_tls_with_the_certificate_as_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = mutual_tls(tmp_path)
    config = tls_config(tls, "verify_and_map: true")
    server = configured_server(
        tmp_path, config + 'authorization { users = [{user: "CN=fiona"}] }\n'
    )
    try:
        env = {
            "FIONA_NATS_URL": server.url,
            "FIONA_NATS__TLS_CA_FILE": str(tls.ca),
            "FIONA_NATS__TLS_CERT_FILE": str(tls.client_cert),
            "FIONA_NATS__TLS_KEY_FILE": str(tls.client_key),
        }
        await round_trip(nats_target(settings(monkeypatch, env)))

        monkeypatch.delenv("FIONA_NATS__TLS_CERT_FILE")
        monkeypatch.delenv("FIONA_NATS__TLS_KEY_FILE")
        assert "TLS" in await refused(nats_target(Settings.load()))

        (tmp_path / "other").mkdir()
        other = mutual_tls(tmp_path / "other")
        monkeypatch.setenv("FIONA_NATS__TLS_CA_FILE", str(other.ca))
        assert "certificate is not trusted" in await refused(nats_target(Settings.load()))
    finally:
        server.stop()


# --- a real service -------------------------------------------------------------------------


@pytest.fixture
def tls_password_server(tmp_path: Path) -> Iterator[tuple[NatsServer, TlsFiles]]:
    """TLS that verifies clients, plus a user and password."""
    tls = mutual_tls(tmp_path)
    users = f'authorization {{ users = [{{user: fiona, password: "{PASSWORD}"}}] }}\n'
    server = configured_server(tmp_path, tls_config(tls, "verify: true") + users)
    try:
        yield server, tls
    finally:
        server.stop()


def service_env(tmp_path: Path, server: NatsServer, tls: TlsFiles, password: str) -> dict[str, str]:
    return {
        "FIONA_NATS__USER": "fiona",
        "FIONA_NATS__PASSWORD_FILE": str(secret_file(tmp_path / "nats-password", password)),
        "FIONA_NATS__TLS_CA_FILE": str(tls.ca),
        "FIONA_NATS__TLS_CERT_FILE": str(tls.client_cert),
        "FIONA_NATS__TLS_KEY_FILE": str(tls.client_key),
    }


def test_a_service_gets_ready_against_nats_with_tls_and_a_password(
    tmp_path: Path, tls_password_server: tuple[NatsServer, TlsFiles]
) -> None:
    server, tls = tls_password_server
    env = service_env(tmp_path, server, tls, PASSWORD)
    with Classifier(tmp_path / "classifier", tmp_path / "data", server.url, env) as classifier:
        assert classifier.metric("fiona_nats_connected", client="fiona-classifier") == 1
        assert PASSWORD not in classifier.log_text()


def test_a_service_with_a_wrong_password_stops_with_one_line(
    tmp_path: Path, tls_password_server: tuple[NatsServer, TlsFiles]
) -> None:
    server, tls = tls_password_server
    env = {
        **os.environ,
        **service_env(tmp_path, server, tls, "wrong-" + PASSWORD),
        "PYTHONPATH": str(REPO),
        "FIONA_DATADIR": str(tmp_path / "data"),
        "FIONA_NATS_URL": server.url,
        "FIONA_CLASSIFIER__HTTP_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "fiona_cli", "run", "classifier"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "configuration error: NATS refused the credentials" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
