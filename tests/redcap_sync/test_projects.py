"""The projects file: what it accepts, what it refuses and how it says so."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from fiona_common.errors import ConfigError
from fiona_common.projects import parse_catalog


def project(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "MEMO",
        "participant_pattern": "^MEMO[0-9]{3}$",
        "destinations": [{"kind": "outbox"}],
        **overrides,
    }


def parse(*projects: dict[str, Any], routing: list[dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    return parse_catalog(
        json.dumps({"projects": list(projects), "routing": routing or []}), "p.json"
    )


def test_a_full_project_loads() -> None:
    catalog = parse(
        project(
            approval_start="2026-01-01",
            approval_end="2027-12-31",
            autoid={"enabled": True, "called_aet": "MEMOAE"},
            deidentification={"profile": "basic", "options": ["retain-long-dates"]},
            features={"drop_secondary_captures": True},
            header_rewrite={"tag": "SeriesDescription", "regex": "^(.*) MEMO$"},
            destinations=[{"kind": "dicom", "aet": "RPACS", "host": "10.0.0.2", "port": 104}],
        ),
        routing=[{"project": "MEMO", "called_aet": "FIONA", "patient_id_regex": "^MEMO"}],
    )
    memo = catalog.by_name["MEMO"]
    assert memo.refuses(date(2026, 6, 1)) is None
    assert memo.refuses_subject("MEMO001") is None
    assert "pattern" in (memo.refuses_subject("MEMO01") or "")


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (project(participant_pattern="(["), "field participant_pattern: not a valid regular"),
        (
            project(destinations=[{"kind": "dicom"}]),
            "field destinations.0: a dicom destination needs",
        ),
        (project(destinations=[]), "field destinations"),
        (project(autoid={"enabled": True}), "field autoid: enabled AutoID needs called_aet"),
        (project(header_rewrite={"tag": "X", "regex": "abc"}), "needs at least one capture group"),
        (project(name="../evil"), "field name"),
        (project(colour="red"), "field colour"),
        (project(approval_end="someday"), "field approval_end"),
    ],
)
def test_a_bad_project_is_refused_naming_project_and_field(
    entry: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(entry)
    assert "p.json" in str(caught.value) and words in str(caught.value)
    if entry.get("name") == "MEMO":
        assert "project 'MEMO' (projects[0])" in str(caught.value)


def test_routing_to_an_unknown_project_and_doubled_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"routing\[0\].*no project named 'NOPE'"):
        parse(project(), routing=[{"project": "NOPE"}])
    with pytest.raises(ConfigError, match="defined twice"):
        parse(project(), project())
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_catalog("{", "p.json")


def test_inactive_and_out_of_approval_projects_refuse_transfers() -> None:
    catalog = parse(
        project(name="OFF", active=False),
        project(name="OLD", approval_end="2025-12-31"),
        project(name="NEW", approval_start="2027-01-01"),
    )
    today = date(2026, 6, 1)
    assert "not active" in (catalog.by_name["OFF"].refuses(today) or "")
    assert "ended" in (catalog.by_name["OLD"].refuses(today) or "")
    assert "starts" in (catalog.by_name["NEW"].refuses(today) or "")
