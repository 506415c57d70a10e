"""deploy/prometheus/rules: valid (promtool check rules), unit-tested (promtool test rules) with
a firing case for every alert, each with a runbook section in docs/deploy.md, built only on
metrics that exist."""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

from tests.deploy.tools import (
    DEPLOY,
    DOCS,
    EXTERNAL_METRICS,
    PENDING_METRICS,
    RECORDING_RULES,
    RULE_TESTS,
    RULES,
    exported_metric_names,
    metric_names,
    run,
    tool,
)

REQUIRED = {
    "FionaServiceDown",
    "FionaConsumerLagGrowing",
    "FionaDiskAboveHighWater",
    "FionaTransfersFailing",
    "FionaQuarantineGrowing",
    "FionaNatsUnreachable",
    "FionaPeerUnreachable",
    "FionaRedcapSyncStalled",
}


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    found = set()
    for heading in re.findall(r"^#+\s+(.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_promtool_accepts_the_rules() -> None:
    check = run([tool("promtool"), "check", "rules", str(RULES)])
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run([tool("promtool"), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert REQUIRED <= set(alerts())
    assert set(alerts()) <= fires, f"never seen firing: {set(alerts()) - fires}"
    assert set(alerts()) <= silent, f"never seen silent: {set(alerts()) - silent}"


def test_every_alert_has_severity_summary_and_a_runbook_section() -> None:
    sections = anchors(DOCS.read_text())
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"], name
        link = rule["annotations"]["runbook_url"]
        assert link == f"docs/deploy.md#{name.lower()}", name
        assert name.lower() in sections, f"{name}: no section '{name}' in docs/deploy.md"


def test_rules_use_only_metrics_that_exist() -> None:
    known = exported_metric_names() | EXTERNAL_METRICS.keys() | PENDING_METRICS.keys()
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known - RECORDING_RULES
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"


def test_generated_files_are_up_to_date() -> None:
    """Dashboards and the PrometheusRule are what deploy/generate.py writes."""
    check = run([sys.executable, str(DEPLOY / "generate.py"), "--check"])
    assert check.returncode == 0, check.stdout + check.stderr
