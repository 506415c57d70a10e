"""Writes the generated files of deploy/: the Grafana dashboards and the PrometheusRule.

    .venv/bin/python deploy/generate.py           write them
    .venv/bin/python deploy/generate.py --check   exit 1 if a written file is out of date

Dashboards (deploy/grafana/dashboards/*.json) are defined below as code: an overview and one
dashboard per service. Every query uses only metrics FIONA's services export (``fiona_*``), the
``up`` series Prometheus adds, and node-exporter's filesystem collector on the data volume
(``node_filesystem_*``, job ``fiona-disk``). NATS is watched through FIONA's own view of it
(``fiona_nats_connected``, ``fiona_consumer_pending``, the heartbeat's ``fiona_peer_up``), not
through prometheus-nats-exporter, which compose and Kubernetes run as an extra only.
tests/deploy checks each query against a running Prometheus. The PrometheusRule
(deploy/k8s/base/monitoring/prometheusrule.yaml) carries the groups of
deploy/prometheus/rules/fiona.rules.yml unchanged.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
RULES = DEPLOY / "prometheus" / "rules" / "fiona.rules.yml"
PROMETHEUS_RULE = DEPLOY / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"

RATE = "$__rate_interval"
JOBS = 'job=~"fiona-(receiver|classifier|arrival|redcap-sync|exporter|heartbeat)"'
DISK_USED = (
    '100 * (1 - node_filesystem_avail_bytes{job="fiona-disk"}'
    ' / node_filesystem_size_bytes{job="fiona-disk"})'
)
# Durable consumers of redcap-sync and of the exporter (fiona_consumer_pending{consumer}).
REDCAP_SYNC_CONSUMERS = "redcap-sync.*"  # its own two; the REDCap writers are redcap-write-*
EXPORTER_CONSUMERS = "exporter-p[0-9]+"


def consumer_lag(consumers: str) -> str:
    """Events waiting per durable consumer: every replica reports the same figure, hence max."""
    return f'max by (consumer) (fiona_consumer_pending{{consumer=~"{consumers}"}})'


def service_lag(consumers: str) -> str:
    """Events waiting for a service, as in the recording rule fiona:consumer_lag."""
    return f"sum({consumer_lag(consumers)})"


@dataclass
class Panel:
    """One Grafana panel: ``targets`` are (PromQL, legend) pairs."""

    title: str
    targets: list[tuple[str, str]]
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    width: int = 8
    thresholds: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[tuple[str, list[Panel]]]


def quantiles(
    metric: str,
    window: str,
    by: str = "",
    qs: tuple[float, ...] = (0.5, 0.95),
    selector: str = "",
) -> list[tuple[str, str]]:
    """p50/p95 (...) of a histogram, optionally per label ``by``."""
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{selector}[{window}])))",
            f"p{int(q * 100)}{suffix}",
        )
        for q in qs
    ]


def health_row(job: str, service: str, nats: bool = True) -> tuple[str, list[Panel]]:
    connected = Panel(
        "NATS connected",
        [(f'fiona_nats_connected{{job="{job}"}}', "{{instance}}")],
        kind="stat",
        description="1 while the replica's NATS connection is up (fiona_nats_connected).",
        thresholds=[(0, "red"), (1, "green")],
    )
    return (
        "Health",
        [
            Panel(
                "Targets up",
                [(f'up{{job="{job}"}}', "{{instance}}")],
                kind="stat",
                description="1 when Prometheus could scrape the replica's /metrics.",
                thresholds=[(0, "red"), (1, "green")],
            ),
            Panel(
                "Ready (/readyz)",
                [(f'fiona_service_ready{{service="{service}"}}', "{{instance}}")],
                kind="stat",
                description="1 when the replica is ready to work (fiona_service_ready).",
                thresholds=[(0, "red"), (1, "green")],
            ),
            *([connected] if nats else []),
        ],
    )


OVERVIEW = Dashboard(
    "fiona-overview",
    "FIONA overview",
    "The whole pipeline: reception, completion, delivery, backlogs, quarantine, disk, peers.",
    [
        (
            "Health",
            [
                Panel(
                    "Services up",
                    [(f"sum by (job) (up{{{JOBS}}})", "{{job}}")],
                    kind="stat",
                    description="Replicas of each service Prometheus can scrape.",
                    thresholds=[(0, "red"), (1, "green")],
                    width=6,
                ),
                Panel(
                    "Services ready",
                    [("sum by (service) (fiona_service_ready)", "{{service}}")],
                    kind="stat",
                    description="Replicas of each service whose /readyz answers 200.",
                    thresholds=[(0, "red"), (1, "green")],
                    width=6,
                ),
                Panel(
                    "NATS connected",
                    [("min by (job) (fiona_nats_connected)", "{{job}}")],
                    kind="stat",
                    description="1 when every replica of the service is connected to NATS; 0 "
                    "while one waits for NATS or reconnects (fiona_nats_connected).",
                    thresholds=[(0, "red"), (1, "green")],
                    width=4,
                ),
                Panel(
                    "Peers answering",
                    [("min by (peer) (fiona_peer_up)", "{{peer}}")],
                    kind="stat",
                    description="1 when the heartbeat's last check of the peer succeeded: C-ECHO "
                    "to DICOM peers, the REDCap API, a NATS round trip.",
                    thresholds=[(0, "red"), (1, "green")],
                    width=4,
                ),
                Panel(
                    "Receiving enabled",
                    [("min by (listener) (fiona_receiver_enabled)", "{{listener}}")],
                    kind="stat",
                    description="0 while config/enabled switches reception off.",
                    thresholds=[(0, "orange"), (1, "green")],
                    width=4,
                ),
            ],
        ),
        (
            "Flow",
            [
                Panel(
                    "Objects received /s",
                    [
                        (
                            f"sum by (outcome) (rate(fiona_receiver_objects_total[{RATE}]))",
                            "{{outcome}}",
                        )
                    ],
                    unit="ops",
                ),
                Panel(
                    "Associations",
                    [
                        (
                            f"sum by (outcome) (rate(fiona_receiver_associations_total[{RATE}]))",
                            "{{outcome}} /s",
                        ),
                        ("sum(fiona_receiver_associations_active)", "open now"),
                    ],
                ),
                Panel(
                    "Consumer lag per service",
                    [
                        ("sum(fiona_receiver_event_backlog)", "receiver (events to publish)"),
                        ("max(fiona_classifier_consumer_lag)", "classifier"),
                        ("max(fiona_arrival_consumer_lag)", "arrival"),
                        (service_lag(REDCAP_SYNC_CONSUMERS), "redcap-sync"),
                        (service_lag(EXPORTER_CONSUMERS), "exporter"),
                    ],
                    description="Events waiting for each service, as its durable consumers "
                    "report them (pending + in flight).",
                ),
                Panel(
                    "Studies in flight",
                    [
                        ("max(fiona_arrival_studies_in_flight)", "in flight"),
                        ("max(fiona_arrival_oldest_in_flight_seconds) / 60", "oldest (minutes)"),
                    ],
                ),
                Panel(
                    "Time to complete (last object -> study complete)",
                    quantiles(
                        "fiona_arrival_complete_delay_seconds", "15m", selector='{level="study"}'
                    ),
                    unit="s",
                ),
                Panel(
                    "Time to deliver (study complete -> delivered)",
                    quantiles("fiona_exporter_complete_to_delivered_seconds", "15m"),
                    unit="s",
                ),
                Panel(
                    "Transfers by result (per hour)",
                    [
                        (
                            "sum by (result) (increase(fiona_exporter_transfers_total[1h]))",
                            "{{result}}",
                        )
                    ],
                ),
                Panel(
                    "Transfer requests by reason (per hour)",
                    [
                        (
                            "sum by (reason) "
                            "(increase(fiona_redcap_sync_transfer_requests_total[1h]))",
                            "{{reason}}",
                        )
                    ],
                ),
                Panel(
                    "Unassigned studies",
                    [("max(fiona_redcap_sync_unassigned_studies)", "waiting for a route")],
                ),
            ],
        ),
        (
            "Quarantine and storage",
            [
                Panel(
                    "Quarantined by reason (last hour)",
                    [
                        (
                            "sum by (reason) (increase(fiona_receiver_quarantined_total[1h]))",
                            "{{reason}}",
                        )
                    ],
                ),
                Panel(
                    "Data volume used",
                    [(DISK_USED, "{{mountpoint}}")],
                    unit="percent",
                    kind="stat",
                    thresholds=[(0, "green"), (85, "orange"), (95, "red")],
                ),
                Panel(
                    "Data volume free and staging",
                    [
                        ('node_filesystem_avail_bytes{job="fiona-disk"}', "free"),
                        ("max(fiona_exporter_staging_bytes)", "staging (de-identified copies)"),
                    ],
                    unit="bytes",
                ),
            ],
        ),
        (
            "REDCap",
            [
                Panel(
                    "Since the last successful REDCap pull",
                    [
                        (
                            "time() - max by (what) (fiona_redcap_last_sync_timestamp_seconds)",
                            "{{what}}",
                        )
                    ],
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Writes to REDCap pending",
                    [("sum(fiona_redcap_pending_writes)", "pending")],
                    width=12,
                ),
            ],
        ),
    ],
)

RECEIVER = Dashboard(
    "fiona-receiver",
    "FIONA receiver",
    "DICOM listeners, inbox, archive writes and event publishing (fiona run receiver).",
    [
        health_row("fiona-receiver", "receiver"),
        (
            "DICOM",
            [
                Panel(
                    "Objects /s",
                    [
                        (
                            "sum by (listener, called_aet, outcome) "
                            f"(rate(fiona_receiver_objects_total[{RATE}]))",
                            "{{listener}} {{called_aet}} {{outcome}}",
                        )
                    ],
                    unit="ops",
                ),
                Panel(
                    "Bytes /s",
                    [
                        (
                            f"sum by (outcome) (rate(fiona_receiver_bytes_total[{RATE}]))",
                            "{{outcome}}",
                        )
                    ],
                    unit="Bps",
                ),
                Panel(
                    "C-STORE answer time",
                    quantiles("fiona_receiver_store_seconds", RATE, qs=(0.5, 0.95, 0.99)),
                    unit="s",
                ),
                Panel(
                    "Associations /s",
                    [
                        (
                            "sum by (listener, outcome) "
                            f"(rate(fiona_receiver_associations_total[{RATE}]))",
                            "{{listener}} {{outcome}}",
                        )
                    ],
                ),
                Panel(
                    "Open associations",
                    [("sum by (listener) (fiona_receiver_associations_active)", "{{listener}}")],
                ),
                Panel(
                    "Duplicates /s",
                    [
                        (
                            f"sum by (listener) (rate(fiona_receiver_duplicates_total[{RATE}]))",
                            "{{listener}}",
                        )
                    ],
                    unit="ops",
                ),
                Panel(
                    "Receiving enabled",
                    [("min by (listener) (fiona_receiver_enabled)", "{{listener}}")],
                    kind="stat",
                    thresholds=[(0, "orange"), (1, "green")],
                ),
            ],
        ),
        (
            "Events, inbox, quarantine",
            [
                Panel(
                    "Events waiting to be published",
                    [("sum by (instance) (fiona_receiver_event_backlog)", "{{instance}}")],
                ),
                Panel(
                    "Events published /s",
                    [
                        (
                            "sum by (outcome) "
                            f"(rate(fiona_receiver_events_published_total[{RATE}]))",
                            "{{outcome}}",
                        ),
                        (
                            f"sum(rate(fiona_receiver_events_deferred_total[{RATE}]))",
                            "deferred to a rescan",
                        ),
                    ],
                    unit="ops",
                ),
                Panel(
                    "Inbox imports (per hour)",
                    [
                        (
                            "sum by (outcome) (increase(fiona_receiver_inbox_imports_total[1h]))",
                            "{{outcome}}",
                        )
                    ],
                ),
                Panel(
                    "Quarantined by reason (per hour)",
                    [
                        (
                            "sum by (reason) (increase(fiona_receiver_quarantined_total[1h]))",
                            "{{reason}}",
                        )
                    ],
                ),
            ],
        ),
    ],
)

CLASSIFIER = Dashboard(
    "fiona-classifier",
    "FIONA classifier",
    "Indexing into site/raw, series summaries and classification (fiona run classifier).",
    [
        health_row("fiona-classifier", "classifier"),
        (
            "Work",
            [
                Panel(
                    "Objects indexed /s",
                    [
                        (
                            "sum by (outcome) "
                            f"(rate(fiona_classifier_objects_indexed_total[{RATE}]))",
                            "{{outcome}}",
                        )
                    ],
                    unit="ops",
                ),
                Panel(
                    "Series summaries changed /s",
                    [(f"sum(rate(fiona_classifier_series_updated_total[{RATE}]))", "series")],
                    unit="ops",
                ),
                Panel(
                    "Time per object",
                    quantiles("fiona_classifier_classify_seconds", RATE, qs=(0.5, 0.95, 0.99)),
                    unit="s",
                ),
                Panel(
                    "Consumer lag",
                    [("max(fiona_classifier_consumer_lag)", "events waiting")],
                ),
                Panel(
                    "Rule files refused (per hour)",
                    [
                        (
                            "sum(increase(fiona_classifier_rule_file_errors_total[1h]))",
                            "refused",
                        )
                    ],
                ),
            ],
        ),
    ],
)

ARRIVAL = Dashboard(
    "fiona-arrival",
    "FIONA arrival",
    "When series and studies are complete (fiona run arrival).",
    [
        health_row("fiona-arrival", "arrival"),
        (
            "Completion",
            [
                Panel(
                    "Instances /s",
                    [
                        (
                            f"sum by (outcome) (rate(fiona_arrival_instances_total[{RATE}]))",
                            "{{outcome}}",
                        )
                    ],
                    unit="ops",
                ),
                Panel(
                    "Completions by level and reason (per hour)",
                    [
                        (
                            "sum by (level, reason) "
                            "(increase(fiona_arrival_completions_total[1h]))",
                            "{{level}} {{reason}}",
                        )
                    ],
                ),
                Panel(
                    "Reopened (per hour)",
                    [
                        (
                            "sum by (level) (increase(fiona_arrival_reopened_total[1h]))",
                            "{{level}}",
                        )
                    ],
                ),
                Panel(
                    "Last object -> complete",
                    quantiles("fiona_arrival_complete_delay_seconds", "15m", by="level"),
                    unit="s",
                ),
                Panel(
                    "Studies in flight",
                    [("max(fiona_arrival_studies_in_flight)", "in flight")],
                ),
                Panel(
                    "Oldest study in flight",
                    [("max(fiona_arrival_oldest_in_flight_seconds)", "age")],
                    unit="s",
                ),
                Panel(
                    "Consumer lag",
                    [("max(fiona_arrival_consumer_lag)", "events waiting")],
                ),
            ],
        ),
    ],
)

REDCAP_SYNC = Dashboard(
    "fiona-redcap-sync",
    "FIONA redcap-sync",
    "Registry, routing, transfer requests and REDCap (fiona run redcap-sync).",
    [
        health_row("fiona-redcap-sync", "redcap_sync"),
        (
            "Routing and requests",
            [
                Panel(
                    "Transfer requests by reason (per hour)",
                    [
                        (
                            "sum by (reason) "
                            "(increase(fiona_redcap_sync_transfer_requests_total[1h]))",
                            "{{reason}}",
                        )
                    ],
                ),
                Panel(
                    "Transfer results by outcome (per hour)",
                    [
                        (
                            "sum by (outcome) "
                            "(increase(fiona_redcap_sync_transfer_results_total[1h]))",
                            "{{outcome}}",
                        )
                    ],
                ),
                Panel(
                    "Routes refused (per hour)",
                    [
                        (
                            "sum by (route) (increase(fiona_redcap_sync_routes_refused_total[1h]))",
                            "{{route}}",
                        )
                    ],
                ),
                Panel(
                    "Unassigned studies",
                    [("max(fiona_redcap_sync_unassigned_studies)", "waiting for a route")],
                ),
                Panel(
                    "Consumer lag",
                    [(consumer_lag("redcap-.*"), "{{consumer}}")],
                    description="Events waiting per durable consumer: studies, results and, "
                    "with REDCap, the three REDCap writers (redcap-write-*).",
                ),
            ],
        ),
        (
            "REDCap",
            [
                Panel(
                    "Since the last successful REDCap pull",
                    [
                        (
                            "time() - max by (what) (fiona_redcap_last_sync_timestamp_seconds)",
                            "{{what}}",
                        )
                    ],
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Writes to REDCap pending",
                    [("sum(fiona_redcap_pending_writes)", "pending")],
                    width=12,
                ),
                Panel(
                    "Rows written to REDCap (per hour)",
                    [
                        (
                            "sum by (kind) (increase(fiona_redcap_writes_total[1h]))",
                            "{{kind}}",
                        )
                    ],
                    width=12,
                ),
                Panel(
                    "REDCap calls failed (per hour)",
                    [
                        (
                            "sum by (what) (increase(fiona_redcap_failures_total[1h]))",
                            "{{what}}",
                        )
                    ],
                    width=12,
                ),
            ],
        ),
    ],
)

EXPORTER = Dashboard(
    "fiona-exporter",
    "FIONA exporter",
    "De-identification and delivery to research PACS and outbox (fiona run exporter).",
    [
        health_row("fiona-exporter", "exporter"),
        (
            "Delivery",
            [
                Panel(
                    "Transfers by project and result (per hour)",
                    [
                        (
                            "sum by (project, result) "
                            "(increase(fiona_exporter_transfers_total[1h]))",
                            "{{project}} {{result}}",
                        )
                    ],
                ),
                Panel(
                    "Objects /s by destination and status",
                    [
                        (
                            "sum by (destination, status) "
                            f"(rate(fiona_exporter_objects_total[{RATE}]))",
                            "{{destination}} {{status}}",
                        )
                    ],
                    unit="ops",
                ),
                Panel(
                    "Bytes delivered /s",
                    [
                        (
                            f"sum by (destination) (rate(fiona_exporter_bytes_total[{RATE}]))",
                            "{{destination}}",
                        )
                    ],
                    unit="Bps",
                ),
                Panel(
                    "Deliveries put off (per hour)",
                    [("sum(increase(fiona_exporter_retries_total[1h]))", "retries")],
                    description="Transient failures (destination down, out of resources).",
                ),
                Panel(
                    "Request -> result",
                    quantiles("fiona_exporter_transfer_seconds", "15m"),
                    unit="s",
                ),
                Panel(
                    "Study complete -> delivered",
                    quantiles("fiona_exporter_complete_to_delivered_seconds", "15m"),
                    unit="s",
                ),
                Panel(
                    "C-STORE latency at destinations",
                    quantiles("fiona_exporter_store_seconds", RATE, qs=(0.5, 0.95, 0.99)),
                    unit="s",
                ),
                Panel(
                    "Staging area",
                    [("max(fiona_exporter_staging_bytes)", "de-identified copies")],
                    unit="bytes",
                ),
                Panel(
                    "Consumer lag",
                    [(consumer_lag(EXPORTER_CONSUMERS), "{{consumer}}")],
                    description="Requests waiting per partition consumer: a slow or unreachable "
                    "destination holds its partition.",
                ),
            ],
        ),
        (
            "SFTP destinations",
            [
                Panel(
                    "Bytes written to SFTP /s",
                    [(f"sum(rate(fiona_exporter_sftp_bytes_total[{RATE}]))", "written")],
                    unit="Bps",
                ),
                Panel(
                    "SFTP uploads by outcome (per hour)",
                    [
                        (
                            "sum by (outcome) (increase(fiona_exporter_sftp_uploads_total[1h]))",
                            "{{outcome}}",
                        )
                    ],
                ),
                Panel(
                    "SFTP confirmation failures (per hour)",
                    [
                        (
                            "sum(increase(fiona_exporter_sftp_confirmation_failures_total[1h]))",
                            "size or checksum differed",
                        )
                    ],
                ),
            ],
        ),
    ],
)

HEARTBEAT = Dashboard(
    "fiona-heartbeat",
    "FIONA heartbeat",
    "Checks of every configured peer: PACS nodes and DICOM destinations (C-ECHO), the REDCap "
    "API, NATS (fiona run heartbeat).",
    [
        health_row("fiona-heartbeat", "heartbeat", nats=False),
        (
            "Peers",
            [
                Panel(
                    "Peers answering",
                    [("min by (peer) (fiona_peer_up)", "{{peer}}")],
                    kind="stat",
                    description="1 when the last check of the peer succeeded.",
                    thresholds=[(0, "red"), (1, "green")],
                ),
                Panel(
                    "Round trip of the last check",
                    [("max by (peer) (fiona_peer_rtt_seconds)", "{{peer}}")],
                    unit="s",
                    description="From connecting to the answer; absent while the peer is down.",
                ),
                Panel(
                    "Checks by outcome (per hour)",
                    [
                        (
                            "sum by (outcome) (increase(fiona_peer_checks_total[1h]))",
                            "{{outcome}}",
                        )
                    ],
                ),
            ],
        ),
    ],
)

ALL = [OVERVIEW, RECEIVER, CLASSIFIER, ARRIVAL, REDCAP_SYNC, EXPORTER, HEARTBEAT]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panel_json(panel: Panel, pid: int, x: int, y: int) -> dict:
    steps = [
        {"color": color, "value": None if i == 0 else value}
        for i, (value, color) in enumerate(panel.thresholds or [(0, "green")])
    ]
    body: dict = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": e, "legendFormat": lg}
            for i, (e, lg) in enumerate(panel.targets)
        ],
    }
    if panel.kind == "stat":
        body["fieldConfig"]["defaults"]["color"] = {"mode": "thresholds"}
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    return body


def dashboard_json(dash: Dashboard) -> dict:
    panels: list[dict] = []
    y = 0
    for title, row in dash.rows:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y, x = y + 1, 0
        for panel in row:
            if x + panel.width > 24:
                y, x = y + 8, 0
            panels.append(panel_json(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    return {
        "uid": dash.uid,
        "title": dash.title,
        "description": dash.description,
        "tags": ["fiona"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "links": [
            {
                "type": "dashboards",
                "title": "FIONA",
                "tags": ["fiona"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as ``|`` blocks, as in the hand-kept rule file."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _str)


def prometheus_rule() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "fiona",
            "labels": {"app.kubernetes.io/part-of": "fiona", "prometheus": "fiona"},
        },
        "spec": {"groups": groups},
    }
    head = "# Generated by deploy/generate.py from deploy/prometheus/rules/fiona.rules.yml.\n"
    return head + yaml.dump(rule, Dumper=_BlockDumper, sort_keys=False, width=200)


def outputs() -> dict[Path, str]:
    files = {
        DASHBOARDS / f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2) + "\n" for d in ALL
    }
    files[PROMETHEUS_RULE] = prometheus_rule()
    return files


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    stale = [p for p, text in outputs().items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(DEPLOY.parent)} (run deploy/generate.py)")
        return 1 if stale else 0
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
