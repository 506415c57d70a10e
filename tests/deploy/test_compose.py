"""deploy/compose.yaml: valid against the Compose specification (offline) and complete: NATS
with JetStream, the five services and the heartbeat from the one image, Prometheus, Grafana,
Orthanc."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

from fiona_common.settings import Settings
from tests.deploy.tools import DEPLOY, run, tool

COMPOSE = DEPLOY / "compose.yaml"
FIONA = ["receiver", "classifier", "arrival", "redcap-sync", "exporter", "heartbeat"]


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


def test_compose_file_matches_the_compose_specification() -> None:
    check = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_fiona_service_runs_from_the_one_image_with_its_command() -> None:
    for name in FIONA:
        service = services()[name]
        assert service["command"] == ["run", name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert service["image"] == "${FIONA_IMAGE:-fiona:0.1.0}"
        assert service["environment"]["FIONA_NATS_URL"] == "nats://nats:4222"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "fiona-data:/data" in service["volumes"]
        assert service["depends_on"]["nats"]["condition"] == "service_healthy"
    assert services()["receiver"]["ports"] == ["11112:11112"]
    assert (DEPLOY / "Dockerfile").exists() and (DEPLOY / "compose" / "projects.json").exists()


def test_nats_runs_jetstream_and_its_exporter_reads_it() -> None:
    nats = services()["nats"]
    assert "--jetstream" in nats["command"] and "healthcheck" in nats
    exporter = services()["nats-exporter"]["command"]
    assert "-jsz=all" in exporter and exporter[-1] == "http://nats:8222"


def test_every_image_is_pinned_and_orthanc_has_tcp_nodelay() -> None:
    for name, service in services().items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
    assert services()["orthanc"]["environment"]["TCP_NODELAY"] == "1"


def test_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    declared = set(compose()["volumes"])
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_no_secret_is_written_into_the_compose_file() -> None:
    """Passwords come from deploy/.env (not committed); compose refuses to start without them."""
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|TOKEN|SECRET|REGISTERED_USERS", key):
                assert re.search(r"\$\{[A-Z_]+:\?", value), f"{name}: {key} is written out"
    example = (DEPLOY / ".env.example").read_text()
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=$", example, re.M)
    assert re.search(r"^ORTHANC_PASSWORD=$", example, re.M)


def test_prometheus_scrapes_each_service_on_its_port_and_loads_the_rules() -> None:
    prometheus = services()["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ports = Settings.load()
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    for name in FIONA:
        port = getattr(ports, name.replace("-", "_")).http_port
        assert targets[f"fiona-{name}"] == [f"{name}:{port}"]
    assert targets["nats"] == ["nats-exporter:7777"]
    assert targets["fiona-disk"] == ["disk-metrics:9100"]
    assert "fiona-data:/data:ro" in services()["disk-metrics"]["volumes"]
    check = run(
        [tool("promtool"), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")]
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_gets_the_datasource_and_the_dashboards() -> None:
    grafana = services()["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "fiona.yaml").read_text())[
        "providers"
    ]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert len(list(Path(DEPLOY / "grafana" / "dashboards").glob("*.json"))) == 1 + len(FIONA)
