"""The Kubernetes manifests: rendered by kustomize, valid against the Kubernetes schemas
(offline), and wired as docs/deploy.md says (probes, limits, security, scaling, policies)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fiona_common.errors import ConfigError
from fiona_common.projects import parse_catalog
from fiona_common.secret_files import read_secret
from tests.deploy.tools import DEPLOY, RULES, run, tool, yaml_documents

K8S = DEPLOY / "k8s"
OVERLAY = K8S / "overlays" / "example"
# Oldest version the manifests promise (StatefulSet pod-index label: 1.28+), and the newest.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
FIONA = ["receiver", "classifier", "arrival", "redcap-sync", "exporter", "heartbeat"]
SCALED = ["receiver", "classifier", "arrival", "exporter"]
NATS_CLIENTS = [*FIONA, "janitor", "backup"]

Obj = dict[str, Any]


@functools.cache
def render(folder: Path) -> tuple[Obj, ...]:
    result = run([tool("kubectl"), "kustomize", str(folder)])
    assert result.returncode == 0, f"kustomize {folder}: {result.stderr}"
    return tuple(yaml_documents(result.stdout))


def objects(kind: str, folder: Path = OVERLAY) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in render(folder) if o["kind"] == kind}


def pod_specs(folder: Path = OVERLAY) -> dict[str, Obj]:
    """Pod template of every workload and CronJob, by workload name."""
    specs = {}
    for obj in render(folder):
        if obj["kind"] in ("Deployment", "StatefulSet"):
            specs[obj["metadata"]["name"]] = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            specs[obj["metadata"]["name"]] = obj["spec"]["jobTemplate"]["spec"]["template"]
    return specs


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Does a label selector (matchLabels/matchExpressions, or a plain map) pick ``labels``?"""
    match = selector.get("matchLabels", {} if "matchExpressions" in selector else selector)
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        has = labels.get(expr["key"]) in expr.get("values", [])
        if (expr["operator"] == "In" and not has) or (expr["operator"] == "NotIn" and has):
            return False
    return True


@pytest.mark.parametrize("folder", [K8S / "base", OVERLAY], ids=["base", "overlay"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_object_is_valid_for_kubernetes(folder: Path, version: str) -> None:
    rendered = render(folder)
    assert len(rendered) > 30
    for obj in rendered:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # operator CRDs: test_service_monitors... and the PrometheusRule test
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} ({version}): {err.message}")


def test_fiona_services_are_probed_limited_and_unprivileged() -> None:
    specs = pod_specs()
    assert {f"fiona-{s}" for s in FIONA} | {"fiona-janitor", "fiona-backup", "nats"} <= set(specs)
    for name, template in specs.items():
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), where
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), where
    for service in FIONA:
        [container] = specs[f"fiona-{service}"]["spec"]["containers"]
        assert container["args"] == ["run", service]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["image"] == "registry.example.org/fiona:0.1.0"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["data"] == "/data"
        volumes = {v["name"]: v for v in specs[f"fiona-{service}"]["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "fiona-data"


def test_every_workload_has_a_disruption_budget() -> None:
    budgets = objects("PodDisruptionBudget").values()
    for name, template in pod_specs().items():
        if name in ("fiona-janitor", "fiona-backup", "fiona-disk-metrics"):
            continue
        labels = template["metadata"]["labels"]
        assert any(selects(b["spec"]["selector"], labels) for b in budgets), name


def test_scaled_services_run_side_by_side_and_redcap_sync_alone() -> None:
    workloads = objects("Deployment") | objects("StatefulSet")
    for service in SCALED:
        assert workloads[f"fiona-{service}"]["spec"]["replicas"] > 1, service
    sync = workloads["fiona-redcap-sync"]["spec"]
    assert sync["replicas"] == 1 and sync["strategy"]["type"] == "Recreate"
    receiver = objects("StatefulSet")["fiona-receiver"]
    assert receiver["spec"]["podManagementPolicy"] == "OrderedReady"  # pod 0 (primary) first
    env = {e["name"]: e for e in receiver["spec"]["template"]["spec"]["containers"][0]["env"]}
    index = env["FIONA_RECEIVER__WORKER_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.labels['apps.kubernetes.io/pod-index']"
    config = objects("ConfigMap")["fiona-config"]["data"]
    assert config["FIONA_RECEIVER__WORKERS"] == "1"  # multi-process metrics dir is per data dir


def test_nats_is_a_jetstream_cluster_of_three_with_its_exporter(tmp_path: Path) -> None:
    nats = objects("StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    containers = {c["name"]: c for c in nats["spec"]["template"]["spec"]["containers"]}
    assert "-jsz=all" in containers["metrics"]["args"] and "-varz" in containers["metrics"]["args"]
    conf = objects("ConfigMap")["nats-config"]["data"]["nats.conf"]
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", conf)
    assert routes == ["nats-0", "nats-1", "nats-2"]
    path = tmp_path / "nats.conf"
    path.write_text(conf.replace("/data", str(tmp_path / "js")).replace("/var/run", str(tmp_path)))
    check = run([tool("nats-server"), "-t", "-c", str(path)], env={"POD_NAME": "nats-0"})
    assert check.returncode == 0, f"nats-server refuses the config: {check.stderr}"


def test_references_between_objects_resolve() -> None:
    names = {kind: set(objects(kind)) for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim")}
    for name, template in pod_specs().items():
        pod = template["spec"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in names["ConfigMap"], name
            if "secret" in volume:
                assert volume["secret"]["secretName"] in names["Secret"], name
                assert volume["secret"]["defaultMode"] <= 0o440, f"{name}: secret readable by all"
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in names["PersistentVolumeClaim"], name
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in names["ConfigMap"], name
    templates = pod_specs()
    for service in objects("Service").values():
        picked = [
            t
            for t in templates.values()
            if selects(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert picked, f"Service {service['metadata']['name']} selects no pods"
        ports = {p["name"] for t in picked for c in t["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port}"
    claim = objects("PersistentVolumeClaim")["fiona-data"]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"] and claim["storageClassName"]


def test_dicom_is_published_and_keeps_the_senders_address() -> None:
    dicom = objects("Service")["fiona-receiver-dicom"]["spec"]
    assert dicom["type"] in ("LoadBalancer", "NodePort")
    assert dicom["externalTrafficPolicy"] == "Local"  # RECEIVER.ALLOWED_PEERS sees the sender
    assert dicom["ports"] == [{"name": "dicom", "port": 11112, "targetPort": "dicom"}]


def test_housekeeping_and_backup_run_as_cron_jobs() -> None:
    jobs = objects("CronJob")
    janitor = jobs["fiona-janitor"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert janitor["containers"][0]["args"] == ["janitor"]
    backup = jobs["fiona-backup"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "fiona backup create /backup/" in backup["containers"][0]["args"][0].replace('"', "")
    mounts = {m["mountPath"] for m in backup["containers"][0]["volumeMounts"]}
    assert {"/data", "/backup", "/run/secrets/fiona"} <= mounts
    assert all(j["spec"]["concurrencyPolicy"] == "Forbid" for j in jobs.values())


def allowed(
    direction: str, policies: list[Obj], pod: dict[str, str], peer: dict[str, str], port: int
) -> bool:
    """Do the namespace's policies let ``pod`` send to (egress) / receive from (ingress) ``peer``
    on ``port``? Only peers in the same namespace (podSelector) are considered."""
    key, peers_key = ("egress", "to") if direction == "egress" else ("ingress", "from")
    for policy in policies:
        spec = policy["spec"]
        if not selects(spec["podSelector"], pod):
            continue
        for rule in spec.get(key, []):
            ports = [p["port"] for p in rule.get("ports", [])]
            in_namespace = [p for p in rule.get(peers_key, []) if set(p) == {"podSelector"}]
            if (not ports or port in ports) and any(
                selects(p["podSelector"], peer) for p in in_namespace
            ):
                return True
    return False


def test_network_policies_let_only_what_must_talk_talk() -> None:
    policies = list(objects("NetworkPolicy").values())
    default = objects("NetworkPolicy")["fiona-default-deny"]["spec"]
    assert default == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    pods = {name: t["metadata"]["labels"] for name, t in pod_specs().items()}
    nats = pods["nats"]

    def talks(src: str, dst: str, port: int) -> bool:
        return allowed("egress", policies, pods[src], pods[dst], port) and allowed(
            "ingress", policies, pods[dst], pods[src], port
        )

    for client in NATS_CLIENTS:
        assert talks(f"fiona-{client}", "nats", 4222), client
    assert allowed("egress", policies, nats, nats, 6222) and allowed(
        "ingress", policies, nats, nats, 6222
    )
    assert not talks("fiona-disk-metrics", "nats", 4222)
    for src in FIONA:  # the services never call each other over HTTP
        for dst, port in [("receiver", 9101), ("exporter", 9105), ("redcap-sync", 9104)]:
            assert not talks(f"fiona-{src}", f"fiona-{dst}", port), (src, dst)
    scrape = objects("NetworkPolicy")["fiona-prometheus-scrapes"]["spec"]
    scraped_ports = {p["port"] for p in scrape["ingress"][0]["ports"]}
    for service in objects("Service").values():
        for port in service["spec"]["ports"]:
            if port["name"] == "metrics":
                assert port["port"] in scraped_ports, service["metadata"]["name"]


def test_service_monitors_scrape_every_job_the_rules_use() -> None:
    services = objects("Service").values()
    jobs = set()
    for monitor in objects("ServiceMonitor").values():
        spec = monitor["spec"]
        assert spec["jobLabel"] == "app.kubernetes.io/name"
        assert [e["port"] for e in spec["endpoints"]] == ["metrics"]
        picked = [s for s in services if selects(spec["selector"], s["metadata"]["labels"])]
        assert picked, monitor["metadata"]["name"]
        for service in picked:
            assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
            jobs.add(service["metadata"]["labels"]["app.kubernetes.io/name"])
    expected = {f"fiona-{s}" for s in FIONA} | {"nats", "fiona-disk"}
    assert jobs == expected
    rule_text = RULES.read_text()
    assert all(f'job="{job}"' in rule_text or job in rule_text for job in expected)


def test_prometheus_rule_carries_the_rule_file() -> None:
    [rule] = objects("PrometheusRule").values()
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


@pytest.mark.parametrize("name", ["identity.key", "deid.key", "api-token"])
def test_placeholder_secrets_are_refused_by_fiona(name: str) -> None:
    """Nothing runs on a published placeholder: FIONA refuses secrets under 16 characters."""
    with pytest.raises(ConfigError, match="shorter than 16"):
        read_secret(OVERLAY / "secrets" / name, "key")


def test_projects_files_are_accepted_by_fiona() -> None:
    base = objects("ConfigMap", K8S / "base")["fiona-config"]["data"]["projects.json"]
    overlay = objects("ConfigMap")["fiona-config"]["data"]["projects.json"]
    compose = (DEPLOY / "compose" / "projects.json").read_text()
    for text in (base, overlay, compose):
        assert parse_catalog(text).projects
    assert json.loads(overlay) == json.loads((OVERLAY / "projects.json").read_text())


def test_plain_prometheus_scrape_config_for_kubernetes_is_valid(tmp_path: Path) -> None:
    """deploy/prometheus/kubernetes.yml, with the Kubernetes discovery (which Debian's
    Prometheus build leaves out) swapped for a static target, passes promtool."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "kubernetes.yml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")[0]["role"] == "endpoints"
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    check = run([tool("promtool"), "check", "config", str(path)])
    assert check.returncode == 0, check.stdout + check.stderr


def test_no_file_in_deploy_is_world_writable_or_mode_777() -> None:
    for path in DEPLOY.rglob("*"):
        assert not path.stat().st_mode & 0o002, f"{path} is world-writable"
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json", ".py", ""):
            assert not re.search(r"\b0?777\b", path.read_text(errors="replace")), path
