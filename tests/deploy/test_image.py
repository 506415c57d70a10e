"""The image build (deploy/Dockerfile): linted by hadolint (no container engine runs here) and
held to what docs/deploy.md promises; the HEALTHCHECK script's parsing of a command line."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.tools import DEPLOY, REPO, run, tool

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hadolint_finds_nothing() -> None:
    result = run([tool("hadolint"), "--config", str(DEPLOY / ".hadolint.yaml"), str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_are_pinned_by_version_and_digest() -> None:
    bases = [args.split()[0] for kw, args in instructions() if kw == "FROM"]
    assert len(bases) == 2
    for base in bases:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), base


def test_runtime_stage_runs_unprivileged_with_a_healthcheck_and_the_fiona_entrypoint() -> None:
    steps = instructions()
    runtime = steps[max(i for i, (kw, _) in enumerate(steps) if kw == "FROM") :]
    users = [args for kw, args in runtime if kw == "USER"]
    assert users == ["10001:10001"]
    assert any(kw == "HEALTHCHECK" and "healthcheck.py" in args for kw, args in runtime)
    assert ("ENTRYPOINT", '["fiona"]') in runtime
    assert ("CMD", '["run", "receiver"]') in runtime


def test_only_runtime_dependencies_go_into_the_image() -> None:
    text = DOCKERFILE.read_text()
    assert "pip --python /opt/fiona/bin/python install --no-compile ." in text
    commands = " ".join(args for kw, args in instructions() if kw == "RUN")
    assert "[dev]" not in commands and "apt-get" not in commands
    for kw, args in instructions():
        if kw == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"], "the build context is an allow-list"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/opt/fiona/bin/python", "/opt/fiona/bin/fiona", "run", "receiver"], ("receiver", None)),
        (
            ["fiona", "run", "redcap-sync", "--config", "/etc/c.json"],
            ("redcap_sync", "/etc/c.json"),
        ),
        (
            ["python", "-m", "fiona_cli", "run", "exporter", "--config=/c.json"],
            ("exporter", "/c.json"),
        ),
    ],
)
def test_healthcheck_finds_the_service_and_config_of_a_command_line(
    argv: list[str], expected: tuple[str, str | None]
) -> None:
    service, config = healthcheck().service_and_config(argv)
    assert (service, str(config) if config else None) == (expected[0], expected[1])


def test_healthcheck_refuses_a_process_that_is_no_fiona_service() -> None:
    with pytest.raises(SystemExit, match="not a 'fiona run SERVICE'"):
        healthcheck().service_and_config(["nats-server", "-js"])


def test_healthcheck_reports_an_unreachable_service(monkeypatch: pytest.MonkeyPatch) -> None:
    module = healthcheck()
    monkeypatch.setenv("FIONA_ARRIVAL__HTTP_PORT", "9")  # discard port: nothing listens
    monkeypatch.setattr(module, "command_line", lambda pid: ["fiona", "run", "arrival"])
    assert module.main(["1"]) == 1
    assert Path(DEPLOY / "healthcheck.py").read_text().startswith('"""Container health check')
