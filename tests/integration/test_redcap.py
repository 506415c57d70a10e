"""redcap_sync with REDCap as the system of record: the REDCap API emulator, reached through
PyCap, a real nats-server and the redcap-sync service as a process."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fiona_cli.main import main as fiona
from fiona_common.messages import TransferOutcome, TransferResult
from services.redcap_sync.identity import Identity
from tests.fiona_process import RedcapSync
from tests.integration.conftest import wait_until
from tests.integration.studies import complete, publish, requests, write_study
from tests.peers import NatsServer
from tests.redcap_peer import RedcapPeer

ROLES = ["incoming", "projects", "routing", "coupling", "autoid", "project.MEMO"]
ADMIN_FILE = {"projects": [], "defaults": {"destinations": [{"kind": "outbox"}]}}


def project_row(record: str, name: str, pattern: str, **fields: str) -> dict[str, str]:
    return {
        "record_id": record,
        "project_name": name,
        "project_active": "1",
        "project_patient_naming": pattern,
        "project_use_autoid": "0",
        "projects_complete": "2",
    } | fields


def now_text() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M")


@pytest.fixture
def redcap(tmp_path: Path) -> Iterator[RedcapPeer]:
    peer = RedcapPeer(tmp_path / "redcap", ROLES).start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def site(
    tmp_path: Path, nats_server: NatsServer, redcap: RedcapPeer, monkeypatch: pytest.MonkeyPatch
):  # type: ignore[no-untyped-def]
    """Data directory, settings for the command line and the service, REDCap bootstrapped."""
    data = tmp_path / "data"
    (data / "site" / "raw").mkdir(parents=True)
    (data / "config").mkdir()
    (data / "config" / "projects.json").write_text(json.dumps(ADMIN_FILE))
    env = {
        "FIONA_NATS_URL": nats_server.url,
        "FIONA_DATADIR": str(data),
        "FIONA_REDCAP_SYNC__REDCAP__URL": redcap.url,
        "FIONA_REDCAP_SYNC__REDCAP__TOKENS_DIR": str(redcap.tokens_dir),
        "FIONA_REDCAP_SYNC__REDCAP__SYNC_SECONDS": "1",
        "FIONA_REDCAP_SYNC__REDCAP__RETRY_SECONDS": "0.5",
        "FIONA_REDCAP_SYNC__REDCAP__CHUNK": "2",  # several calls per batch: chunking is used
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert fiona(["redcap", "bootstrap"]) == 0
    return data, env


def start_sync(tmp_path: Path, data: Path, env: dict[str, str], name: str = "sync") -> RedcapSync:
    return RedcapSync(tmp_path / name, data, env["FIONA_NATS_URL"], None, env).start()


def transfers(peer: RedcapPeer, study: str) -> list[dict[str, Any]]:
    rows = peer.client("incoming").export_records(records=[study])
    return [r for r in rows if r["redcap_repeat_instrument"] == "transfers"]


def rows_of(peer: RedcapPeer, study: str, instrument: str = "") -> list[dict[str, Any]]:
    rows = peer.client("incoming").export_records(records=[study])
    return [r for r in rows if r["redcap_repeat_instrument"] == instrument]


def result(request: dict[str, Any], outcome: TransferOutcome, mapped: str = "") -> TransferResult:
    return TransferResult(
        transfer_id=request["transfer_id"],
        request_no=request["request_no"],
        site=request["site"],
        study_uid=request["study_uid"],
        outcome=outcome,
        details={"mapped_study_uid": mapped, "seconds": 4.2, "objects": 3} if mapped else {},
    )


def test_full_cycle_study_request_in_redcap_delivery_and_the_project_imaging_row(
    tmp_path: Path,
    site: tuple[Path, dict[str, str]],
    redcap: RedcapPeer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, env = site
    assert fiona(["redcap", "check"]) == 0
    assert "PROBLEM" not in capsys.readouterr().out
    redcap.client("projects").import_records([project_row("1", "MEMO", "^MEMO[0-9]{3}$")])
    with start_sync(tmp_path, data, env):
        study = write_study(data, "PAT-1", accession="ACC-1")
        publish(env["FIONA_NATS_URL"], complete(study))
        wait_until(lambda: len(rows_of(redcap, study)) == 1, what="the study in Incoming")
        [row] = rows_of(redcap, study)
        assert row["study_description"] == "MR head" and row["study_aetitle_sender"] == "SCANNER"
        assert "PAT-1" not in json.dumps(row) and "ACC-1" not in json.dumps(row)  # hashes only
        assert len(row["study_patient_id"]) == 64
        wait_until(lambda: len(rows_of(redcap, study, "series")) == 1, what="the series row")
        assert rows_of(redcap, study, "series")[0]["series_num_files"] == "3"

        # Somebody asks for a transfer in REDCap: a transfers row without transfer date.
        redcap.client("incoming").import_records(
            [
                {
                    "study_instance_uid": study,
                    "redcap_repeat_instrument": "transfers",
                    "redcap_repeat_instance": 1,
                    "transfer_project_name": "MEMO",
                    "transfer_name": "MEMO001",
                    "transfer_event_name": "baseline",
                    "transfer_requested_date": now_text(),
                }
            ]
        )
        wait_until(lambda: len(requests(env["FIONA_NATS_URL"])) == 1, what="the request")
        [request] = requests(env["FIONA_NATS_URL"])
        assert (request["project"], request["participant_id"], request["reason"]) == (
            "MEMO",
            "MEMO001",
            "redcap",
        )
        mapped = f"2.25.{secrets.randbelow(10**30)}"
        publish(
            env["FIONA_NATS_URL"],
            result(request, TransferOutcome.STARTED),
            result(request, TransferOutcome.DELIVERED, mapped),
        )

        def delivered() -> bool:
            rows = transfers(redcap, study)
            return len(rows) == 1 and rows[0]["transfers_complete"] == "2"

        wait_until(delivered, what="the result in the request's own row")
        [done] = transfers(redcap, study)
        assert done["redcap_repeat_instance"] == 1
        assert done["transfer_mapped_uid"] == mapped and done["transfer_date"]
        assert done["transfer_error___2"] == "0" and done["transfer_active_proc_time"] == "4.2"

        def imaging() -> list[dict[str, Any]]:
            rows = redcap.client("project.MEMO").export_records(records=["MEMO001"])
            return [r for r in rows if r["redcap_repeat_instrument"] == "imaging"]

        wait_until(lambda: len(imaging()) == 1, what="the project's imaging row")
        assert imaging()[0]["img_study_instance_uid"] == mapped
        assert imaging()[0]["img_event_name"] == "baseline"
        # Nothing is requested twice, though REDCap is read every second.
        time.sleep(2.5)
        assert len(requests(env["FIONA_NATS_URL"])) == 1
        assert len(transfers(redcap, study)) == 1 and len(imaging()) == 1
        # A late series reopens the study: its revision 2 adds a series row, changes no other.
        late = json.loads(next((data / "site" / "raw" / study).glob("*.json")).read_text())
        late["SeriesInstanceUID"] = f"{study}.9"
        (data / "site" / "raw" / study / f"{study}.9.json").write_text(json.dumps(late))
        publish(env["FIONA_NATS_URL"], complete(study, revision=2))
        wait_until(lambda: len(rows_of(redcap, study, "series")) == 2, what="the late series")
        assert rows_of(redcap, study)[0]["study_revision"] == "2"
        assert [r["redcap_repeat_instance"] for r in rows_of(redcap, study, "series")] == [1, 2]


def test_autoid_routing_and_coupling_lists_come_from_redcap(
    tmp_path: Path, site: tuple[Path, dict[str, str]], redcap: RedcapPeer
) -> None:
    data, env = site
    url = env["FIONA_NATS_URL"]
    redcap.client("projects").import_records(
        [
            project_row("1", "MEMO", "^MEMO[0-9]{3}$"),
            project_row(
                "2", "AUTO", "^AU[0-9]{5}$", project_use_autoid="1", project_autoid_aetitle="AUTOAE"
            ),
        ]
    )
    redcap.client("routing").import_records(
        [
            {
                "record_id": "MEMO",
                "routing_active": "1",
                "routing_dest_project": "MEMO",
                "routing_sending_aetitle": "SCANNER",
                "routing_allowed_patientid": "^MEMO",
                "routing_event_name": "baseline",
            }
        ]
    )
    coupled = write_study(data, "X1", calling="OTHER", accession="ACC42")
    redcap.client("coupling").import_records(
        [
            {
                "record_id": "0",
                "cl_accessionnumber": "ACC42",
                "cl_projectname": "MEMO",
                "cl_subjectid": "MEMO042",
                "cl_eventname": "followup",
                "cl_date": now_text(),
            }
        ]
    )
    # A mapping made earlier (by the original, or another FIONA) for patient 777.
    key = data / "state" / "secrets" / "identity.key"
    key.parent.mkdir(parents=True)
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    known = Identity.from_file(key).hash("patient_id", "777")
    redcap.client("autoid").import_records(
        [
            {
                "record_id": "1",
                "autoid_project_name": "AUTO",
                "autoid_hash": known,
                "autoid_value": "AU00777",
            }
        ]
    )
    with start_sync(tmp_path, data, env):
        routed = write_study(data, "MEMO001")
        first, again, returning = (
            write_study(data, p, called="AUTOAE") for p in ("12345", "12345", "777")
        )
        time.sleep(2.0)  # the first read of REDCap
        publish(url, *(complete(s) for s in (routed, coupled, first, again, returning)))
        wait_until(lambda: len(requests(url)) == 5, what="five requests")
        by_study = {r["study_uid"]: r for r in requests(url)}
        assert (by_study[routed]["reason"], by_study[routed]["event"]) == ("routing", "baseline")
        assert (by_study[coupled]["participant_id"], by_study[coupled]["reason"]) == (
            "MEMO042",
            "coupling",
        )
        assert by_study[first]["participant_id"] == by_study[again]["participant_id"]
        assert by_study[returning]["participant_id"] == "AU00777"  # REDCap's mapping
        # The new mapping is written to REDCap once; the one REDCap had is not written again.

        def mappings() -> list[dict[str, Any]]:
            return redcap.client("autoid").export_records()

        wait_until(lambda: len(mappings()) == 2, what="the new AutoID row")
        time.sleep(1.5)
        rows = mappings()
        assert len(rows) == 2
        new = next(r for r in rows if r["autoid_value"] == by_study[first]["participant_id"])
        assert new["autoid_project_name"] == "AUTO" and "12345" not in json.dumps(rows)


def test_redcap_down_during_a_study_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, site: tuple[Path, dict[str, str]], redcap: RedcapPeer
) -> None:
    data, env = site
    url = env["FIONA_NATS_URL"]
    redcap.client("projects").import_records([project_row("1", "MEMO", "^MEMO[0-9]{3}$")])
    with start_sync(tmp_path, data, env) as service:
        time.sleep(1.5)
        redcap.stop()
        study = write_study(data, "P-DOWN", series_count=3)
        publish(url, complete(study))
        assert fiona(["assign", study, "--project", "MEMO", "--subject", "MEMO005"]) == 0
        [request] = requests(url)
        mapped = f"2.25.{secrets.randbelow(10**30)}"
        publish(
            url,
            result(request, TransferOutcome.STARTED),
            result(request, TransferOutcome.DELIVERED, mapped),
        )
        wait_until(
            lambda: service.metric("fiona_redcap_pending_writes") >= 3, what="pending writes"
        )
        wait_until(lambda: service.metric("fiona_redcap_failures_total") >= 2, what="failures")
        assert service.ready()  # REDCap down stops nothing else
        redcap.start()  # same port, same database

        def written() -> bool:
            rows = transfers(redcap, study)
            return bool(rows) and rows[0].get("transfers_complete") == "2"

        wait_until(written, timeout=30, what="the replay")
        wait_until(lambda: service.metric("fiona_redcap_pending_writes") == 0, what="no backlog")
        assert len(rows_of(redcap, study)) == 1
        assert len(rows_of(redcap, study, "series")) == 3
        [row] = transfers(redcap, study)  # requested, started, delivered: one row, the last state
        assert row["transfer_status"] == "delivered" and row["transfer_name"] == "MEMO005"
        assert row["transfer_mapped_uid"] == mapped


def test_a_bad_token_is_reported_and_never_shown(
    tmp_path: Path,
    site: tuple[Path, dict[str, str]],
    redcap: RedcapPeer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, env = site
    wrong = secrets.token_hex(16).upper()
    (redcap.tokens_dir / "routing").write_text(wrong)
    assert fiona(["redcap", "check"]) == 1
    out = capsys.readouterr().out
    assert "routing: PROBLEM" in out and "incoming: ok" in out
    assert wrong not in out
    (redcap.tokens_dir / "coupling").write_text("too-short")
    assert fiona(["redcap", "check"]) == 2  # a malformed token file is a configuration error
    assert "too-short" not in capsys.readouterr().err
    (redcap.tokens_dir / "coupling").unlink()
    with start_sync(tmp_path, data, env) as service:
        wait_until(
            lambda: service.metric("fiona_redcap_failures_total", what="pull-projects") >= 1,
            what="a failed read of the routing project",
        )
        time.sleep(0.5)
    assert wrong not in service.log_path.read_text()


def test_concurrent_writers_on_one_record_never_share_a_repeat_instance(
    tmp_path: Path, site: tuple[Path, dict[str, str]], redcap: RedcapPeer
) -> None:
    data, env = site
    url = env["FIONA_NATS_URL"]
    redcap.client("projects").import_records([project_row("1", "MEMO", "^MEMO[0-9]{3}$")])
    study = write_study(data, "P-MANY")
    # A person's own row is there before FIONA writes any.
    redcap.client("incoming").import_records(
        [
            {
                "study_instance_uid": study,
                "redcap_repeat_instrument": "transfers",
                "redcap_repeat_instance": 1,
                "transfer_project_name": "ELSEWHERE",
                "transfer_name": "someone",
                "transfer_date": now_text(),
            }
        ]
    )
    with start_sync(tmp_path, data, env, "one"), start_sync(tmp_path, data, env, "two"):
        publish(url, complete(study))
        wait_until(lambda: len(rows_of(redcap, study)) == 1, what="the study")
        subjects = [f"MEMO{n:03d}" for n in range(12)]

        def assign(subject: str) -> None:
            assert fiona(["assign", study, "--project", "MEMO", "--subject", subject]) == 0

        threads = [threading.Thread(target=assign, args=(s,)) for s in subjects]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wait_until(lambda: len(transfers(redcap, study)) == 13, timeout=30, what="13 rows")
        time.sleep(1.5)
        rows = transfers(redcap, study)
        assert len(rows) == 13
        assert sorted(r["transfer_name"] for r in rows) == sorted(["someone", *subjects])
        assert len({r["redcap_repeat_instance"] for r in rows}) == 13


def test_tls_is_verified_against_the_configured_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    peer = RedcapPeer(tmp_path / "redcap", ["incoming"], tls=True).start()
    try:
        assert peer.url.startswith("https://") and peer.ca_file is not None
        monkeypatch.setenv("FIONA_DATADIR", str(tmp_path / "data"))
        monkeypatch.setenv("FIONA_REDCAP_SYNC__REDCAP__URL", peer.url)
        monkeypatch.setenv("FIONA_REDCAP_SYNC__REDCAP__TOKENS_DIR", str(peer.tokens_dir))
        assert fiona(["redcap", "check"]) == 1  # the test CA is not in the system's store
        assert "TLS certificate not trusted" in capsys.readouterr().out
        monkeypatch.setenv("FIONA_REDCAP_SYNC__REDCAP__CA_BUNDLE", str(peer.ca_file))
        assert fiona(["redcap", "bootstrap"]) == 0
        assert fiona(["redcap", "check"]) == 0
    finally:
        peer.stop()
