"""Tokens, rights, bad parameters and REDCap's error bodies and status codes."""

from __future__ import annotations

import pytest
import redcap
import requests
from redcap import RedcapError

from redcap_emulator.emulator import Emulator
from redcap_emulator.server import EmulatorServer
from redcap_emulator.tokens import is_token_shaped
from tests.redcap_emulator.builders import study


def post(server: EmulatorServer, **form: str) -> requests.Response:
    return requests.post(server.url, data=form, timeout=10)


def test_tokens_look_like_redcaps(emulator: Emulator) -> None:
    project_id = emulator.create_project("P")
    first, second = emulator.add_token(project_id), emulator.add_token(project_id)

    assert is_token_shaped(first) and is_token_shaped(second) and first != second
    with pytest.raises(ValueError, match="hexadecimal"):
        emulator.add_token(project_id, token="not-a-token")


def test_unknown_token_is_403_with_redcaps_error(
    emulator: Emulator, server: EmulatorServer
) -> None:
    emulator.create_project("P")
    project = redcap.Project(server.url, "0" * 32)

    with pytest.raises(RedcapError) as caught:
        project.export_records()
    answer = post(server, token="0" * 32, content="record", format="json")

    assert caught.value.args[0] == {"error": "You do not have permissions to use the API"}
    assert answer.status_code == 403
    assert post(server, content="record", format="json").status_code == 403


def test_token_without_import_right_cannot_import(
    emulator: Emulator, server: EmulatorServer
) -> None:
    token = emulator.add_token(emulator.create_project("P"), can_import=False)
    project = redcap.Project(server.url, token)

    with pytest.raises(RedcapError, match="API Import/Update privileges"):
        project.import_records([{"record_id": "1"}])
    answer = post(server, token=token, content="record", format="json", data='[{"record_id":"1"}]')
    assert answer.status_code == 403
    assert project.export_records() == []


def test_token_without_export_or_delete_rights(emulator: Emulator, server: EmulatorServer) -> None:
    project_id = emulator.create_project("P")
    writer = redcap.Project(
        server.url, emulator.add_token(project_id, can_export=False, can_delete=False)
    )

    assert writer.import_records([{"record_id": "1"}]) == {"count": 1}
    with pytest.raises(RedcapError, match="API Export privileges"):
        writer.export_records()
    with pytest.raises(RedcapError, match="Delete Record privileges"):
        writer.delete_records(["1"])


def test_tokens_select_their_own_project(emulator: Emulator, server: EmulatorServer) -> None:
    one = redcap.Project(server.url, emulator.add_token(emulator.create_project("One")))
    two = redcap.Project(server.url, emulator.add_token(emulator.create_project("Two")))

    one.import_records([{"record_id": "1"}])

    assert two.export_records() == []
    assert two.export_project_info()["project_title"] == "Two"


def test_unknown_content_is_400(emulator: Emulator, server: EmulatorServer) -> None:
    token = emulator.add_token(emulator.create_project("P"))

    invalid = post(server, token=token, content="nonsense", format="json")
    unemulated = post(server, token=token, content="file", action="export", returnFormat="json")

    assert (invalid.status_code, invalid.json()) == (
        400,
        {"error": 'The value of the parameter "content" is not valid'},
    )
    assert unemulated.status_code == 400 and "does not support" in unemulated.json()["error"]


def test_errors_follow_return_format(emulator: Emulator, server: EmulatorServer) -> None:
    token = emulator.add_token(emulator.create_project("P"))

    as_csv = post(server, token=token, content="nonsense", format="csv")
    as_xml = post(server, token=token, content="nonsense")
    overridden = post(server, token=token, content="nonsense", format="csv", returnFormat="json")

    assert as_csv.text.startswith("ERROR: ")
    assert '<error>The value of the parameter "content" is not valid</error>' in as_xml.text
    assert overridden.json()["error"].startswith("The value")


def test_classic_projects_have_no_events_or_arms(incoming: redcap.Project) -> None:
    for export in (
        incoming.export_events,
        incoming.export_arms,
        incoming.export_instrument_event_mappings,
    ):
        with pytest.raises(RedcapError, match="classic projects"):
            export()


def test_unsupported_format_is_refused(incoming: redcap.Project) -> None:
    with pytest.raises(RedcapError):
        incoming.export_records(format_type="xml")


def test_request_log_counts_requests_by_content_and_action(
    emulator: Emulator, incoming: redcap.Project
) -> None:
    emulator.clear_request_log()
    for chunk in (["1", "2"], ["3"]):
        incoming.import_records([study(uid) for uid in chunk])
    incoming.export_records(records=["1"])
    incoming.delete_records(["3"])

    assert emulator.request_count("record", "import") == 2
    assert emulator.request_count("record", "export") == 1
    assert emulator.request_count("record") == 4
    assert emulator.request_count("metadata") == 1  # PyCap reads the dictionary once
    assert emulator.requests()[-1].action == "delete"
    assert emulator.requests()[-1].status == 200


def test_multipart_form_bodies_are_understood(emulator: Emulator, server: EmulatorServer) -> None:
    token = emulator.add_token(emulator.create_project("P"))
    form = {"token": token, "content": "record", "format": "json", "data": '[{"record_id":"7"}]'}

    imported = requests.post(server.url, files={k: (None, v) for k, v in form.items()}, timeout=10)
    exported = post(server, token=token, content="record", format="json")

    assert imported.json() == {"count": 1}
    assert exported.json() == [{"record_id": "7", "my_first_instrument_complete": "0"}]
