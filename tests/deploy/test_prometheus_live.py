"""A real Prometheus scraping ``fiona up`` while studies flow into a research PACS (Orthanc).

``fiona up`` runs every service and the heartbeat, with REDCap configured against the REDCap API
emulator (bootstrapped with ``fiona redcap bootstrap``) and the research PACS also configured as
a PACS node, so the REDCap and peer metrics have data too. Prometheus gets the scrape jobs of
deploy/prometheus/prometheus.yml (targets moved to the test's loopback ports) and the rule files
of deploy/prometheus/rules. Then every target of every committed Grafana dashboard is sent to
Prometheus' HTTP API as Grafana would send it: it must parse, and return data, except any
listed in ``NO_DATA_HERE`` with the reason.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

from fiona_cli.main import SERVICES as UP_SERVICES
from tests.builders import new_uid, write_series
from tests.deploy.tools import (
    DEPLOY,
    REPO,
    RULES,
    NodeExporter,
    Prometheus,
    as_sent,
    dashboard_targets,
    metric_names,
    mountpoint,
    run,
)
from tests.fiona_process import http_get
from tests.integration.conftest import wait_until
from tests.peers import ManagedProcess, Orthanc, free_ports, store_scu
from tests.redcap_peer import RedcapPeer

# What ``fiona up`` runs: the five services and the heartbeat.
SERVICES = list(UP_SERVICES)
# The REDCap projects FIONA uses (one token each), as in tests/integration/test_redcap.py.
REDCAP_ROLES = ["incoming", "projects", "routing", "coupling", "autoid", "project.MEMO"]
# A dashboard target selecting one of these may come back empty here (it must still parse),
# each with the reason. Empty: every panel has data in this run. The NATS exporter is not run
# here (neither a Debian nor a PyPI package), and no panel uses its metrics.
NO_DATA_HERE: dict[str, str] = {}


class FionaUp(ManagedProcess):
    """``fiona up`` with its own NATS, every service on free ports, data under ``workdir``."""

    name = "fiona-up"

    def __init__(self, workdir: Path, projects: Path, settings: dict[str, str]) -> None:
        super().__init__(workdir)
        names = ["nats", "dicom", *SERVICES]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.data = workdir / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FIONA_")}
        self.env.update(
            PYTHONPATH=str(REPO),
            TCP_NODELAY="1",
            FIONA_LOCAL_NATS_PORT=str(self.ports["nats"]),
            FIONA_DICOMPORT=str(self.ports["dicom"]),
            FIONA_ARRIVAL__QUIET_SECONDS="1.5",
            FIONA_REDCAP_SYNC__PROJECTS_FILE=str(projects),
            FIONA_REDCAP_SYNC__REEVALUATE_SECONDS="1",
            FIONA_RECEIVER__INBOX_SETTLE_SECONDS="0.5",
            FIONA_HEARTBEAT__INTERVAL_SECONDS="2",
            **{f"FIONA_{n.upper()}__HTTP_PORT": str(self.ports[n]) for n in SERVICES},
            **settings,
        )

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fiona_cli", "up", "--data", str(self.data)]

    def ready(self) -> bool:
        return all(http_get(f"http://127.0.0.1:{self.ports[n]}/readyz")[0] == 200 for n in SERVICES)

    def children(self) -> list[int]:
        """Process ids of the services ``fiona up`` started."""
        assert self.proc is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = stat.with_name("cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid and b"run" in cmdline:
                found.append(int(stat.parent.name))
        return found


def prometheus_config(up: FionaUp, disk: NodeExporter) -> dict:
    """deploy/prometheus/prometheus.yml with this run's targets, a 1 s interval, our rules."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    ports = {f"fiona-{n.replace('_', '-')}": up.ports[n] for n in SERVICES}
    ports["fiona-disk"] = disk.port
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {*ports, "nats"}, "deploy/prometheus/prometheus.yml: unexpected jobs"
    del jobs["nats"]  # see NATS_EXPORTER
    for name, job in jobs.items():
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[name]}"]}]
        for relabel in job.get("metric_relabel_configs", []):
            if relabel["source_labels"] == ["mountpoint"]:  # the data volume: here, its mount
                relabel["regex"] = re.escape(mountpoint(up.data))
    config["scrape_configs"] = list(jobs.values())
    return config


def fiona_settings(pacs: Orthanc, redcap: RedcapPeer) -> dict[str, str]:
    """REDCap (the emulator, read every second) and the research PACS as a PACS node, which the
    heartbeat checks (C-ECHO) along with REDCap and NATS."""
    node = {"aet": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
    return {
        "FIONA_REDCAP_SYNC__REDCAP__URL": redcap.url,
        "FIONA_REDCAP_SYNC__REDCAP__TOKENS_DIR": str(redcap.tokens_dir),
        "FIONA_REDCAP_SYNC__REDCAP__SYNC_SECONDS": "1",
        "FIONA_PACS_NODES": json.dumps({"RPACS": node}),
    }


def bootstrap_redcap(up: FionaUp) -> None:
    """``fiona redcap bootstrap``: the data dictionaries FIONA needs, in every REDCap project."""
    command = [sys.executable, "-m", "fiona_cli", "redcap", "bootstrap"]
    done = run(command, env=dict(up.env or {}, FIONA_DATADIR=str(up.data)), timeout=60)
    assert done.returncode == 0, f"fiona redcap bootstrap: {done.stdout}{done.stderr}"


def write_projects(path: Path, pacs: Orthanc) -> None:
    node = {"kind": "dicom", "aet": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
    memo = {"name": "MEMO", "participant_pattern": "^MEMO[0-9]{3}$", "destinations": [node]}
    rule = {"project": "MEMO", "called_aet": "MEMO", "patient_id_regex": "^MEMO"}
    path.write_text(json.dumps({"projects": [memo], "routing": [rule]}))


def send_studies(tmp_path: Path, up: FionaUp, pacs: Orthanc) -> None:
    """A study delivered, sent twice (duplicates), then one more image (reopened, resent); a
    study whose patient ID the project refuses; a file that is no DICOM (quarantined)."""
    port = up.ports["dicom"]
    study, series = new_uid(), new_uid()
    write_series(tmp_path / "a", 4, study_uid=study, series_uid=series, PatientID="MEMO012")
    write_series(tmp_path / "refused", 2, PatientID="MEMOX1", PatientName="Roe^Richard")
    (up.data / "inbox" / "notes.txt").write_text("not a DICOM file\n")
    store_scu("127.0.0.1", port, [tmp_path / "a", tmp_path / "refused"], called_aet="MEMO")
    store_scu("127.0.0.1", port, [tmp_path / "a"], called_aet="MEMO")
    wait_until(lambda: len(pacs.instances()) == 4, timeout=60, what="the study in the PACS")
    write_series(tmp_path / "late", 1, study_uid=study, series_uid=series, PatientID="MEMO012")
    store_scu("127.0.0.1", port, [tmp_path / "late"], called_aet="MEMO")
    wait_until(lambda: len(pacs.instances()) == 5, timeout=60, what="the late image resent")


def unanswered(prom: Prometheus) -> dict[str, str]:
    """Dashboard targets that did not return data (and are not excused): expr -> why."""
    missing = {}
    for dashboard, title, expr in dashboard_targets():
        status, body = prom.query(as_sent(expr))
        assert status == 200 and body.get("status") == "success", (
            f"{dashboard} / {title}: Prometheus refused {expr!r}: {body}"
        )
        if not body["data"]["result"] and not metric_names(expr) & NO_DATA_HERE.keys():
            missing[expr] = f"{dashboard} / {title}"
    return missing


def test_every_dashboard_query_returns_data_while_studies_flow(tmp_path: Path) -> None:
    with ExitStack() as stack:
        pacs = Orthanc(tmp_path / "pacs", extra_config={"DicomAlwaysAllowFind": True}).start()
        stack.callback(pacs.kill)  # a graceful stop takes Orthanc ~3 s; its data is thrown away
        redcap = RedcapPeer(tmp_path / "redcap", REDCAP_ROLES).start()
        stack.callback(redcap.stop)
        projects = tmp_path / "projects.json"
        write_projects(projects, pacs)
        up = FionaUp(tmp_path / "fiona", projects, fiona_settings(pacs, redcap))
        bootstrap_redcap(up)
        stack.enter_context(up.start(timeout=90))
        disk = stack.enter_context(NodeExporter(tmp_path / "disk"))
        prom = stack.enter_context(Prometheus(tmp_path / "prometheus", prometheus_config(up, disk)))
        send_studies(tmp_path, up, pacs)

        # The image's HEALTHCHECK script finds each service's port from its command line.
        for pid in up.children():
            check = run([sys.executable, str(DEPLOY / "healthcheck.py"), str(pid)], env=up.env)
            assert check.returncode == 0, f"healthcheck of pid {pid}: {check.stderr}"
        assert len(up.children()) == len(SERVICES)

        deadline = time.monotonic() + 45
        while (missing := unanswered(prom)) and time.monotonic() < deadline:
            time.sleep(1)
        assert not missing, f"dashboard queries without data: {json.dumps(missing, indent=1)}"

        lag = prom.query("fiona:consumer_lag")[1]["data"]["result"]
        assert {r["metric"]["service"] for r in lag} == {
            "receiver",
            "classifier",
            "arrival",
            "redcap-sync",
            "exporter",
        }
        targets = prom.api("targets")["activeTargets"]
        assert {t["labels"]["job"] for t in targets if t["health"] == "up"} == {
            *(f"fiona-{n.replace('_', '-')}" for n in SERVICES),
            "fiona-disk",
        }
        connected = prom.query("min by (job) (fiona_nats_connected)")[1]["data"]["result"]
        assert {r["metric"]["job"]: r["value"][1] for r in connected} == {
            f"fiona-{n.replace('_', '-')}": "1" for n in SERVICES if n != "heartbeat"
        }
        peers = prom.query("fiona_peer_up")[1]["data"]["result"]
        assert {r["metric"]["peer"]: r["value"][1] for r in peers} == {
            "RPACS": "1",
            "redcap": "1",
            "nats": "1",
        }
        # REDCap really was read and written, not only counted from zero.
        synced = prom.query("fiona_redcap_last_sync_timestamp_seconds")[1]["data"]["result"]
        pulls = {"projects", "coupling", "autoid", "requests"}
        assert {r["metric"]["what"] for r in synced} == pulls
        wait_until(
            lambda: (
                _value(prom, 'sum(fiona_redcap_writes_total{kind="study"})') > 0
                and _value(prom, 'sum(fiona_redcap_writes_total{kind="request"})') > 0
            ),
            timeout=15,
            what="study and request rows written to REDCap",
        )
        wait_until(
            lambda: all(r["health"] != "unknown" for r in _rules(prom)),
            timeout=15,
            what="every rule evaluated once",
        )
        broken = {r["name"]: r.get("lastError") for r in _rules(prom) if r["health"] != "ok"}
        assert not broken, f"rules failing against live data: {broken}"
        firing = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]}
        assert "FionaServiceDown" not in firing


def _rules(prom: Prometheus) -> list[dict]:
    return [rule for group in prom.api("rules")["groups"] for rule in group["rules"]]


def _value(prom: Prometheus, expr: str) -> float:
    result = prom.query(expr)[1]["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0
