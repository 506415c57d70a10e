"""redcap_sync in local mode against a real nats-server: routes, assignment, transfer requests."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fiona_cli.main import main as fiona
from fiona_common.messages import (
    TransferOutcome,
    TransferResult,
)
from tests.fiona_process import RedcapSync
from tests.integration.conftest import wait_until
from tests.integration.studies import complete, publish, requests, uid, write_study
from tests.peers import NatsServer

PROJECTS = {
    "projects": [
        {
            "name": "MEMO",
            "participant_pattern": "^MEMO[0-9]{3}$",
            "destinations": [{"kind": "outbox"}],
        },
        {
            "name": "AUTO",
            "participant_pattern": "^AU[0-9]{5}$",
            "autoid": {"enabled": True, "called_aet": "AUTOAE"},
            "destinations": [{"kind": "outbox"}],
        },
        {
            "name": "OFF",
            "active": False,
            "participant_pattern": ".+",
            "destinations": [{"kind": "outbox"}],
        },
        {
            "name": "OLD",
            "approval_end": "2020-01-01",
            "participant_pattern": ".+",
            "destinations": [{"kind": "outbox"}],
        },
    ],
    "routing": [
        {
            "project": "MEMO",
            "called_aet": "FIONA",
            "calling_aet": "SCANNER",
            "patient_id_regex": "^MEMO",
            "event": "baseline",
        }
    ],
}


@pytest.fixture
def setup(tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    projects = tmp_path / "projects.json"
    projects.write_text(json.dumps(PROJECTS))
    data = tmp_path / "data"
    (data / "site" / "raw").mkdir(parents=True)
    key = tmp_path / "identity.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    # The command line reaches the same NATS, projects file, key and data directory.
    monkeypatch.setenv("FIONA_NATS_URL", nats_server.url)
    monkeypatch.setenv("FIONA_DATADIR", str(data))
    monkeypatch.setenv("FIONA_REDCAP_SYNC__PROJECTS_FILE", str(projects))
    monkeypatch.setenv("FIONA_REDCAP_SYNC__KEY_FILE", str(tmp_path / "identity.key"))
    service = RedcapSync(tmp_path / "sync", data, nats_server.url, projects)
    with service:
        yield service, data, nats_server.url, projects


def test_routing_rule_requests_a_transfer_once(setup) -> None:  # type: ignore[no-untyped-def]
    service, data, url, _ = setup
    study = write_study(data, "MEMO001")
    publish(url, complete(study), complete(study))  # redelivered / re-published
    wait_until(lambda: len(requests(url)) == 1, what="one request")
    time.sleep(1.0)
    [req] = requests(url)
    assert (req["project"], req["participant_id"], req["event"], req["reason"]) == (
        "MEMO",
        "MEMO001",
        "baseline",
        "routing",
    )
    other_sender = write_study(data, "MEMO002", calling="ELSEWHERE")
    publish(url, complete(other_sender))
    time.sleep(1.5)
    assert len(requests(url)) == 1  # the rule names its sender


def test_autoid_gives_the_same_patient_the_same_pseudonym(setup) -> None:  # type: ignore[no-untyped-def]
    _, data, url, _ = setup
    first, again, other = (
        write_study(data, p, called="AUTOAE") for p in ("12345", "12345", "99999")
    )
    publish(url, complete(first), complete(again), complete(other))
    wait_until(lambda: len(requests(url)) == 3, what="three requests")
    by_study = {r["study_uid"]: r["participant_id"] for r in requests(url)}
    assert by_study[first] == by_study[again] != by_study[other]
    assert all(p.startswith("AU") and len(p) == 7 for p in by_study.values())
    assert "12345" not in json.dumps(requests(url))


def test_coupling_list_by_accession_and_study_uid_assigns_waiting_studies(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    _, data, url, _ = setup
    by_accession = write_study(data, "X1", calling="OTHER", accession="ACC42")
    by_uid = write_study(data, "X2", calling="OTHER")
    publish(url, complete(by_accession), complete(by_uid))
    wait_until(lambda: "unassigned" in "".join(studies_lines()), what="holding area")
    assert len(studies_lines()) == 2
    csv = data.parent / "coupling.csv"
    csv.write_text(
        "accession_number,study_instance_uid,project,participant_id,event\n"
        "ACC42,,MEMO,MEMO042,baseline\n"
        f",{by_uid},MEMO,MEMO043,\n"
        ",,MEMO,MEMO044,\n"
        "ACC9,,NOPE,MEMO045,\n"
        "ACC10,,MEMO,wrong,\n"
    )
    assert fiona(["coupling", "import", str(csv)]) == 1
    err = capsys.readouterr().err
    assert "line 4:" in err and "line 5: unknown project" in err and "line 6: participant ID" in err
    wait_until(lambda: len(requests(url)) == 2, what="coupled studies requested")
    got = {r["study_uid"]: (r["participant_id"], r["reason"]) for r in requests(url)}
    assert got == {by_accession: ("MEMO042", "coupling"), by_uid: ("MEMO043", "coupling")}
    assert studies_lines() == ["(no studies)"]


def studies_lines() -> list[str]:
    return cli_lines(["studies"])


def cli_lines(argv: list[str]) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fiona(argv)
    return out.getvalue().strip().splitlines()


def test_manual_assignment_and_its_refusals(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    _, data, url, _ = setup
    study = write_study(data, "P7", calling="OTHER")
    publish(url, complete(study))
    wait_until(
        lambda: len(studies_lines()) == 1 and "unassigned" in studies_lines()[0], what="registered"
    )
    assert "P7" not in studies_lines()[0]  # hashes only
    capsys.readouterr()
    for args, words in [
        (["--project", "OFF", "--subject", "S1"], "not active"),
        (["--project", "OLD", "--subject", "S1"], "ended"),
        (["--project", "MEMO", "--subject", "bad"], "pattern"),
        (["--project", "NOPE", "--subject", "S1"], "unknown project"),
    ]:
        assert fiona(["assign", study, *args]) == 1
        assert words in capsys.readouterr().err
    assert fiona(["assign", uid(), "--project", "MEMO", "--subject", "MEMO007"]) == 1
    assert "no complete study" in capsys.readouterr().err
    assert (
        fiona(["assign", study, "--project", "MEMO", "--subject", "MEMO007", "--event", "v2"]) == 0
    )
    assert (
        fiona(["assign", study, "--project", "MEMO", "--subject", "MEMO007", "--event", "v2"]) == 0
    )
    wait_until(lambda: len(requests(url)) == 1, what="manual request")
    assert requests(url)[0]["reason"] == "manual"
    assert "MEMO/MEMO007:requested" in study_line(study)


def study_line(study: str) -> str:
    return "".join(line for line in cli_lines(["studies", "--all"]) if study in line)


def test_reopened_study_is_resent_and_failures_are_retried(setup) -> None:  # type: ignore[no-untyped-def]
    service, data, url, _ = setup
    study = write_study(data, "MEMO010")
    publish(url, complete(study))
    wait_until(lambda: len(requests(url)) == 1, what="request")
    first = requests(url)[0]
    result = TransferResult(
        transfer_id=first["transfer_id"],
        request_no=1,
        site="default",
        study_uid=study,
        outcome=TransferOutcome.DELIVERED,
    )
    publish(url, result)
    wait_until(lambda: "delivered" in study_line(study), what="delivered")
    assert (
        fiona(["assign", study, "--project", "MEMO", "--subject", "MEMO010", "--event", "baseline"])
        == 0
    )
    wait_until(lambda: len(requests(url)) == 2, what="re-requested by the user")
    assert (requests(url)[1]["reason"], requests(url)[1]["request_no"]) == ("user", 2)
    result = result.model_copy(update={"request_no": 2})
    publish(url, result)
    wait_until(lambda: "delivered" in study_line(study), what="delivered again")
    publish(url, complete(study, revision=2), complete(study, revision=2))
    wait_until(lambda: len(requests(url)) == 3, what="resend")
    resend = requests(url)[2]
    assert (resend["request_no"], resend["reason"], resend["revision"]) == (3, "reopened", 2)
    failed = result.model_copy(
        update={"request_no": 3, "outcome": TransferOutcome.FAILED, "error": "PACS down"}
    )
    publish(url, failed)
    wait_until(lambda: len(requests(url)) == 4, timeout=20, what="retry after the delay")
    assert requests(url)[3]["reason"] == "retry" and requests(url)[3]["request_no"] == 4


def test_restart_loses_and_duplicates_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    service, data, url, _ = setup
    studies = [write_study(data, f"MEMO{n:03d}") for n in range(20, 25)]
    service.kill()
    publish(url, *(complete(s) for s in studies))
    service.start()
    wait_until(lambda: len(requests(url)) == 5, what="five requests")
    service.kill()
    service.start()
    publish(url, *(complete(s) for s in studies))
    time.sleep(2.0)
    assert sorted(r["study_uid"] for r in requests(url)) == sorted(studies)


def test_projects_file_reload_and_refusal_of_a_bad_one(setup) -> None:  # type: ignore[no-untyped-def]
    service, data, url, projects = setup
    projects.write_text('{"projects": [{"name": "BROKEN"}]}')
    wait_until(lambda: "projects file refused" in service.log_text(), what="refusal logged")
    study = write_study(data, "MEMO050")
    publish(url, complete(study))
    wait_until(lambda: len(requests(url)) == 1, what="old rules still in force")
    changed = json.loads(json.dumps(PROJECTS))
    changed["routing"].append(
        {"project": "MEMO", "calling_aet": "NEWSCANNER", "patient_id_regex": "^MEMO"}
    )
    projects.write_text(json.dumps(changed))
    wait_until(lambda: "projects file reloaded" in service.log_text(), what="reload")
    late = write_study(data, "MEMO051", calling="NEWSCANNER")
    publish(url, complete(late))
    wait_until(lambda: len(requests(url)) == 2, what="new rule applied")


def api(
    service: RedcapSync, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.http_port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_http_api_lists_and_assigns_with_a_token(tmp_path: Path, setup) -> None:  # type: ignore[no-untyped-def]
    service, data, url, projects = setup
    token = secrets.token_hex(16)
    token_file = tmp_path / "api.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    service.stop()
    service.env["FIONA_REDCAP_SYNC__API_TOKEN_FILE"] = str(token_file)
    service.start()
    study = write_study(data, "Q1", calling="OTHER")
    publish(url, complete(study))
    assert api(service, "GET", "/api/studies", None)[0] == 401
    assert api(service, "GET", "/api/studies", "wrong-token-wrong")[0] == 401
    wait_until(
        lambda: len(api(service, "GET", "/api/studies", token)[1]["studies"]) == 1, what="listed"
    )
    [listed] = api(service, "GET", "/api/studies", token)[1]["studies"]
    assert listed["study_uid"] == study and "Q1" not in json.dumps(listed)
    code, answer = api(
        service,
        "POST",
        "/api/assign",
        token,
        {"study_uid": study, "project": "MEMO", "subject": "x"},
    )
    assert code == 400 and "pattern" in answer["message"]
    code, answer = api(
        service,
        "POST",
        "/api/assign",
        token,
        {"study_uid": uid(), "project": "MEMO", "subject": "MEMO001"},
    )
    assert code == 400 and answer["error"] == "unknown_study"
    body = {"study_uid": study, "project": "MEMO", "subject": "MEMO001", "event": "v1"}
    code, answer = api(service, "POST", "/api/assign", token, body)
    assert code == 200 and [t["state"] for t in answer["transfers"].values()] == ["requested"]
    wait_until(lambda: len(requests(url)) == 1, what="request from the API")
    assert api(service, "GET", "/api/studies", token)[1]["studies"] == []
    assert len(api(service, "GET", "/api/studies?all=1", token)[1]["studies"]) == 1
