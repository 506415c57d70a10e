"""The Grafana dashboards (deploy/grafana/dashboards): well-formed, covering what the overview
must show, and every query built on metrics that exist and accepted by Prometheus' parser.
tests/deploy/test_prometheus_live.py runs them against live data."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.deploy.tools import (
    DASHBOARDS,
    EXTERNAL_METRICS,
    PENDING_METRICS,
    as_sent,
    dashboard_targets,
    exported_metric_names,
    metric_names,
    run,
    tool,
)

SERVICES = ["receiver", "classifier", "arrival", "redcap-sync", "exporter", "heartbeat"]
# What the overview must show, as words its panel titles contain.
OVERVIEW_TOPICS = [
    "objects received",
    "associations",
    "consumer lag",
    "in flight",
    "time to complete",
    "time to deliver",
    "transfers by result",
    "quarantine",
    "data volume",
    "peers",
    "nats",
    "redcap",
]


def dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_an_overview_and_one_dashboard_per_service() -> None:
    assert set(dashboards()) == {"fiona-overview", *(f"fiona-{s}" for s in SERVICES)}
    for uid, board in dashboards().items():
        assert board["uid"] == uid and "fiona" in board["tags"]
        assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), uid
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{uid}/{panel['title']}"
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
                assert panel["targets"], f"{uid}/{panel['title']} has no query"


def test_overview_shows_everything_the_admin_guide_names() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboards()["fiona-overview"]["panels"])
    missing = [topic for topic in OVERVIEW_TOPICS if topic not in titles]
    assert not missing, f"overview lacks {missing}: {titles}"


def test_every_query_uses_only_metrics_that_exist() -> None:
    known = exported_metric_names() | EXTERNAL_METRICS.keys() | PENDING_METRICS.keys()
    for dashboard, title, expr in dashboard_targets():
        names = metric_names(expr)
        assert names, f"{dashboard}/{title}: no metric in {expr!r}"
        assert names <= known, f"{dashboard}/{title}: unknown {names - known}"


def test_every_query_parses(tmp_path: Path) -> None:
    """Each query, as Grafana sends it, as a recording rule: promtool parses every one."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_sent(expr)}
        for i, (_, _, expr) in enumerate(dashboard_targets())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    check = run([tool("promtool"), "check", "rules", str(path)])
    assert check.returncode == 0, check.stdout + check.stderr
