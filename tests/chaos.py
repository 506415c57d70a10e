"""Chaos driver: `fiona up` delivering to Orthanc while senders push and a killer SIGKILLs.

Shared by ``tests/integration/test_chaos.py`` (bounded, CI) and ``bench/soak.py`` (long runs).
Each object is sent by its own ``storescu`` call, so the sender knows exactly which objects
were acknowledged (exit 0) and which were refused (non-zero exit: the sender saw the failure).
Every study has its own participant ID (``CHAOSnnnn``, routed by PatientID to project CHAOS),
so Orthanc's instance count per patient is the count delivered for that study.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.builders import new_uid, write_series
from tests.fiona_process import REPO, http_get, read_events
from tests.peers import Orthanc, dcmtk, dcmtk_env, free_ports

RETRIES = 6  # attempts per object before the sender counts it refused
SERVICES = ["receiver", "classifier", "arrival", "redcap_sync", "exporter"]
# Identifiers planted in every study; none may reach the research PACS.
PLANTED = {
    "PatientName": "Chaosname^Planted",
    "AccessionNumber": "ACCPLANT77",
    "ReferringPhysicianName": "Referrer^Planted",
    "InstitutionName": "Planted General Hospital",
}


@dataclass
class Study:
    """One generated study and what its sender learnt about each object."""

    participant: str
    study_uid: str
    files: list[Path]
    acked: list[Path] = field(default_factory=list)
    refused: list[Path] = field(default_factory=list)
    last_ack_at: float = 0.0


@dataclass
class ChaosReport:
    """Figures of one run."""

    sent: int = 0
    acknowledged: int = 0
    refused: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    held: int = 0  # acknowledged, waiting for a refused sibling (series short), not lost
    service_kills: int = 0
    nats_restarts: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # duplicates, leaks, failures, strangers
    losses: list[str] = field(default_factory=list)  # acknowledged but not delivered

    def summary(self) -> str:
        return (
            f"sent={self.sent} acknowledged={self.acknowledged} refused={self.refused} "
            f"delivered={self.delivered} held={self.held} lost={self.lost} "
            f"duplicated={self.duplicated} "
            f"service_kills={self.service_kills} nats_restarts={self.nats_restarts} "
            f"seconds={self.seconds:.0f}"
        )


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def child_name(pid: int) -> str | None:
    """Which supervised child ``pid`` is: a service name, ``janitor`` or ``nats``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv if a]
    if words and words[0].endswith("nats-server"):
        return "nats"
    if "janitor" in words:
        return "janitor"
    if "run" in words and words.index("run") + 1 < len(words):
        return words[words.index("run") + 1].replace("-", "_")
    return None


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class ChaosRig:
    """``fiona up`` on free ports with project CHAOS delivering to an Orthanc."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.pacs = Orthanc(workdir / "pacs")
        names = ["nats", "dicom", *SERVICES]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.studies: list[Study] = []
        self.report = ChaosReport()
        self.up: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._next = 0

    def env(self) -> dict[str, str]:
        projects = self.workdir / "projects.json"
        node = {
            "kind": "dicom",
            "aet": self.pacs.aet,
            "host": "127.0.0.1",
            "port": self.pacs.dicom_port,
        }
        rule = {"project": "CHAOS", "called_aet": "CHAOS", "patient_id_regex": "^CHAOS"}
        project = {
            "name": "CHAOS",
            "participant_pattern": "^CHAOS[0-9]{4}$",
            "destinations": [node],
        }
        projects.write_text(json.dumps({"projects": [project], "routing": [rule]}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIONA_")}
        env.update(
            PYTHONPATH=str(REPO),
            TCP_NODELAY="1",
            FIONA_LOCAL_NATS_PORT=str(self.ports["nats"]),
            FIONA_DICOMPORT=str(self.ports["dicom"]),
            FIONA_ARRIVAL__QUIET_SECONDS="1.5",
            FIONA_ARRIVAL__GRACE_SECONDS="0.3",
            FIONA_EXPORTER__RETRY_SECONDS="0.5",
            FIONA_EXPORTER__MAX_RETRY_SECONDS="20",
            FIONA_REDCAP_SYNC__PROJECTS_FILE=str(projects),
            **{f"FIONA_{n.upper()}__HTTP_PORT": str(self.ports[n]) for n in SERVICES},
        )
        return env

    def start(self) -> None:
        self.pacs.start()
        log = (self.workdir / "up.log").open("wb")
        self.up = subprocess.Popen(
            [sys.executable, "-m", "fiona_cli", "up", "--data", str(self.workdir / "data")],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready(timeout=90)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in SERVICES:
            url = f"http://127.0.0.1:{self.ports[name]}/readyz"
            while http_get(url)[0] != 200:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} not ready after {timeout}s")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.up is not None and self.up.poll() is None:
            os.killpg(self.up.pid, signal.SIGTERM)
            try:
                self.up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.up.pid, signal.SIGKILL)
                self.up.wait(10)
        self.pacs.stop()

    def children(self) -> dict[str, int]:
        assert self.up is not None
        found = {}
        for pid in children_of(self.up.pid):
            name = child_name(pid)
            if name is not None:
                found[name] = pid
        return found

    # --- senders -----------------------------------------------------------------------

    def new_study(self) -> Study:
        with self._lock:
            self._next += 1
            number = self._next
        participant = f"CHAOS{number:04d}"
        study_uid = new_uid()
        folder = self.workdir / "in" / participant
        files: list[Path] = []
        for series in range(self.rng.randint(1, 2)):
            files += write_series(
                folder / f"s{series}",
                self.rng.randint(1, 4),
                study_uid=study_uid,
                PatientID=participant,
                **PLANTED,
            )
        study = Study(participant, study_uid, files)
        with self._lock:
            self.studies.append(study)
        return study

    def send_object(self, path: Path) -> bool:
        args = [dcmtk("storescu"), "-aet", "CHAOSSCU", "-aec", "CHAOS", "-to", "20"]
        args += ["127.0.0.1", str(self.ports["dicom"]), str(path)]
        try:
            result = subprocess.run(args, capture_output=True, env=dcmtk_env(), timeout=60)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def send_with_retries(self, path: Path, stop: threading.Event) -> bool:
        for _ in range(RETRIES):
            if self.send_object(path):
                return True
            stop.wait(0.5)
        return False

    def sender(self, stop: threading.Event) -> None:
        while not stop.is_set():
            study = self.new_study()
            for path in study.files:
                # Like a modality, retry a refused object: a series short of its
                # ImagesInAcquisition rightly waits ARRIVAL.MAX_OPEN_SECONDS for the rest.
                ok = self.send_with_retries(path, stop)
                with self._lock:
                    (study.acked if ok else study.refused).append(path)
                    if ok:
                        study.last_ack_at = time.time()

    # --- killer ------------------------------------------------------------------------

    def kill_one(self, nats: bool) -> None:
        children = self.children()
        if nats:
            target = "nats"
        else:
            target = self.rng.choice([*SERVICES, "receiver", "janitor"])
        pid = children.get(target)
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        if target == "nats":
            self.report.nats_restarts += 1
        else:
            self.report.service_kills += 1

    def killer(self, stop: threading.Event, kills: int, nats_restarts: int, seconds: float) -> None:
        events = [False] * kills + [True] * nats_restarts
        self.rng.shuffle(events)
        gap = seconds / (len(events) + 1)
        for is_nats in events:
            if stop.wait(self.rng.uniform(0.5, 1.5) * gap):
                return
            self.kill_one(is_nats)

    # --- run and check -----------------------------------------------------------------

    def run(self, seconds: float, kills: int, nats_restarts: int, senders: int = 3) -> None:
        started = time.monotonic()
        stop = threading.Event()
        threads = [threading.Thread(target=self.sender, args=(stop,)) for _ in range(senders)]
        killer = threading.Thread(target=self.killer, args=(stop, kills, nats_restarts, seconds))
        for thread in [*threads, killer]:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in [*threads, killer]:
            thread.join(120)
        self.report.seconds = time.monotonic() - started

    def delivered_per_participant(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for patient in self.pacs.get_json("/patients?expand"):
            pid = patient["MainDicomTags"].get("PatientID", "")
            stats = self.pacs.get_json(f"/patients/{patient['ID']}/statistics")
            counts[pid] = counts.get(pid, 0) + int(stats["CountInstances"])
        return counts

    def settled(self, counts: dict[str, int]) -> bool:
        return all(
            counts.get(s.participant, 0) >= len(s.acked) for s in self.studies if not s.refused
        )

    def wait_quiescent(self, timeout: float, stable_seconds: float = 8.0) -> dict[str, int]:
        """Wait until every acknowledged object is delivered and Orthanc stops changing."""
        deadline = time.monotonic() + timeout
        last: dict[str, int] = {}
        since = time.monotonic()
        while time.monotonic() < deadline:
            counts = self.delivered_per_participant()
            if counts != last:
                last, since = counts, time.monotonic()
            elif self.settled(counts) and time.monotonic() - since >= stable_seconds:
                return counts
            time.sleep(1)
        return last

    def check(self, counts: dict[str, int]) -> ChaosReport:
        report = self.report
        for study in self.studies:
            delivered = counts.get(study.participant, 0)
            report.sent += len(study.files)
            report.acknowledged += len(study.acked)
            report.refused += len(study.refused)
            report.delivered += delivered
            if delivered < len(study.acked) and study.refused:
                # A series short of a refused object waits ARRIVAL.MAX_OPEN_SECONDS: by design.
                report.held += len(study.acked) - delivered
            elif delivered < len(study.acked):
                report.lost += len(study.acked) - delivered
                report.losses.append(
                    f"{study.participant}: {len(study.acked)} acknowledged, {delivered} delivered"
                )
            if delivered > len(study.files):
                report.duplicated += delivered - len(study.files)
                report.problems.append(
                    f"{study.participant}: {len(study.files)} sent, {delivered} delivered"
                )
        strangers = set(counts) - {s.participant for s in self.studies}
        if strangers:
            report.problems.append(f"unexpected patients in the PACS: {sorted(strangers)}")
        report.problems += self.duplicate_results()
        report.problems += self.leaked_identifiers()
        return report

    def duplicate_results(self) -> list[str]:
        """More than one ``delivered`` result for the same request is a duplicate export."""
        seen: dict[tuple[str, int], int] = {}
        for event in self.results():
            if event.get("outcome") == "delivered":
                key = (event["transfer_id"], event["request_no"])
                seen[key] = seen.get(key, 0) + 1
        problems = [f"transfer {k} delivered {n} times" for k, n in seen.items() if n > 1]
        failed = [e for e in self.results() if e.get("outcome") == "failed"]
        return problems + [f"transfer {e['transfer_id']} failed: {e.get('error')}" for e in failed]

    def results(self) -> list[dict[str, Any]]:
        url = f"nats://127.0.0.1:{self.ports['nats']}"
        return read_events(url, "fiona.transfer.result", "FIONA_TRANSFERS")

    def leaked_identifiers(self) -> list[str]:
        """Scan every file Orthanc stored for a planted identifier."""
        leaks = []
        planted = [v.encode() for v in PLANTED.values()]
        planted += [v.split("^")[0].encode() for v in PLANTED.values() if "^" in v]
        planted += [s.study_uid.encode() for s in self.studies]
        for instance in self.pacs.instances():
            raw = self.pacs_file(instance)
            leaks += [f"{instance}: {p.decode()}" for p in planted if p in raw]
        return leaks

    def pacs_file(self, instance: str) -> bytes:
        return http_get(f"{self.pacs.url}/instances/{instance}/file", timeout=10)[1]
