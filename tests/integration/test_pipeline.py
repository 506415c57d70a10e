"""The services together: storescu -> receiver -> classifier -> arrival -> redcap_sync."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.builders import new_uid, write_series
from tests.fiona_process import Arrival, Classifier, Receiver, RedcapSync, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, store_scu


def test_a_study_sent_to_the_demo_ae_title_is_requested_for_the_demo_project(
    tmp_path: Path, receiver: Receiver, nats_server: NatsServer
) -> None:
    url, data = nats_server.url, receiver.datadir
    study = new_uid()
    write_series(tmp_path / "t1", 4, study_uid=study, PatientID="CLINICAL-77", PatientName="Doe^J")
    with (
        Classifier(tmp_path / "cls", data, url),
        Arrival(tmp_path / "arr", data, url),
        RedcapSync(tmp_path / "sync", data, url, projects=None),
    ):
        store_scu("127.0.0.1", receiver.port, [tmp_path / "t1"], called_aet="DEMO")
        wait_until(
            lambda: read_events(url, "fiona.transfer.requested", "FIONA_TRANSFERS"),
            timeout=30,
            what="a transfer request",
        )
    [request] = read_events(url, "fiona.transfer.requested", "FIONA_TRANSFERS")
    assert request["study_uid"] == study and request["project"] == "DEMO"
    assert (
        re.fullmatch(r"DEMO[0-9]{4}", request["participant_id"]) and request["reason"] == "autoid"
    )
    assert (data / "config" / "projects.json").exists()
    key = data / "state" / "secrets" / "identity.key"
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    stored = json.dumps(read_events(url, "fiona.>", "FIONA_TRANSFERS"))
    assert "CLINICAL-77" not in stored and "Doe" not in stored
