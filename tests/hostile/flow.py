"""One end-to-end run with planted identifiers and secrets, shared by the hostile-input checks.

storescu -> receiver -> classifier -> arrival -> redcap_sync (AutoID) -> exporter -> outbox,
plus an inbox drop and a broken object (quarantine paths log too). The data directory, every
process's log and the planted values are kept for the permission and log tests to inspect.
"""

from __future__ import annotations

import grp
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tests.builders import mr_dataset, new_uid, write_part10, write_series
from tests.fiona_process import Arrival, Classifier, Exporter, Receiver, RedcapSync
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, store_scu

PATIENT = {
    "PatientName": "Quistorpf^Ermengilde^Xavera",
    "PatientID": "PIDQX-938172",
    "AccessionNumber": "ACQX-771234",
    "ReferringPhysicianName": "Brannigvold^Theodric",
    "PatientBirthDate": "19411107",
}


@dataclass
class FlowRun:
    root: Path
    datadir: Path
    token: str
    secret_files: list[Path] = field(default_factory=list)
    shared_gid: int | None = None  # SHARED_GROUP of the run

    def logs(self) -> dict[Path, list[str]]:
        """Every log file of every process of the run, as lines."""
        return {
            p: p.read_text(errors="replace").splitlines() for p in sorted(self.root.rglob("*.log"))
        }

    def planted(self) -> list[str]:
        """Every value that must never appear in a log: identifiers, their parts, secrets."""
        values = set(PATIENT.values())
        for value in PATIENT.values():
            values.update(part for part in value.replace("^", " ").split() if len(part) >= 5)
        values.add(self.token)
        for path in self.secret_files:
            text = path.read_bytes().decode(errors="replace").strip()
            values.add(text)
            values.add(path.read_bytes().hex())
        return sorted(v for v in values if v)


def run_flow(root: Path) -> FlowRun:
    """Run the whole flow once under ``root``; returns what the checks need."""
    data = root / "data"
    token_file = root / "api.token"
    token = "tok-" + secrets.token_hex(16)
    token_file.write_text(token)
    token_file.chmod(0o600)
    projects = root / "projects.json"
    project = {
        "name": "DEMO",
        "participant_pattern": "^DEMO[0-9]{4}$",
        "autoid": {"enabled": True, "called_aet": "DEMO"},
        "deidentification": {"profile": "recommended"},
        "destinations": [{"kind": "outbox"}],
    }
    projects.write_text(json.dumps({"projects": [project]}))
    secrets_dir = data / "state" / "secrets"
    # A key file named in the settings must exist (only the default one is created by FIONA,
    # as deid.key is below): plant it the way an admin would.
    secrets_dir.parent.mkdir(mode=0o750, parents=True)  # as an admin would: not for others
    secrets_dir.mkdir(mode=0o700)
    identity_key = secrets_dir / "identity.key"
    identity_key.write_text(secrets.token_hex(32))
    identity_key.chmod(0o600)
    sync_extra = {
        "FIONA_REDCAP_SYNC__KEY_FILE": str(secrets_dir / "identity.key"),
        "FIONA_REDCAP_SYNC__API_TOKEN_FILE": str(token_file),
    }
    gid = next(g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, os.getgid()))
    study = new_uid()
    write_series(root / "in" / "t1", 3, study_uid=study, **PATIENT)
    write_series(root / "in" / "dwi", 2, study_uid=study, **PATIENT)
    broken = mr_dataset(StudyInstanceUID=None, **PATIENT)
    with (
        NatsServer(root / "nats") as nats_server,
        Receiver(root / "rx", data, nats_server.url, {"FIONA_SHARED_GROUP": str(gid)}) as receiver,
    ):
        url = nats_server.url
        with (
            Classifier(root / "cls", data, url),
            Arrival(root / "arr", data, url),
            RedcapSync(root / "sync", data, url, projects, sync_extra),
            Exporter(root / "exp", data, url, projects),
        ):
            store_scu("127.0.0.1", receiver.port, [root / "in"], called_aet="DEMO")
            inbox_copy = mr_dataset(study_uid=study, **PATIENT)
            write_part10(inbox_copy, root / "inbox-src" / "drop.dcm")
            (root / "inbox-src" / "drop.dcm").rename(data / "inbox" / "drop.dcm")
            write_part10(broken, data / "inbox" / "broken.dcm")
            outbox = data / "outbox" / "DEMO"
            wait_until(
                lambda: sum(1 for p in outbox.rglob("*.dcm") if p.is_file()) >= 5,
                timeout=90,
                what="the study in the outbox",
            )
            wait_until(
                lambda: any((data / "quarantine").rglob("reason.json")),
                what="the broken object quarantined",
            )
    keys = sorted(p for p in secrets_dir.iterdir() if p.is_file())
    return FlowRun(root, data, token, [*keys, token_file], gid)
