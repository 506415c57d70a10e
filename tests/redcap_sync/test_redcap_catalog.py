"""Projects and routing rules from REDCap rows, merged with the projects file (no network)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from fiona_common.projects import load_catalog, parse_catalog
from services.redcap_sync.redcap_catalog import Snapshot, load_snapshot, merge, save

FILE = parse_catalog(
    """{
      "projects": [
        {"name": "LOCAL", "participant_pattern": "^L[0-9]+$",
         "destinations": [{"kind": "outbox"}]},
        {"name": "MEMO", "participant_pattern": "^OLD$",
         "deidentification": {"profile": "basic"},
         "destinations": [{"kind": "dicom", "aet": "RPACS", "host": "10.0.0.9", "port": 104}]}
      ],
      "defaults": {"destinations": [{"kind": "outbox"}]}
    }"""
)


def project_row(name: str, **fields: str) -> dict[str, str]:
    row = {
        "record_id": "1",
        "project_name": name,
        "project_active": "1",
        "project_patient_naming": "^MEMO[0-9]{3}$",
        "project_rec_start_date": "2026-01-01",
        "project_rec_end_date": "2027-12-31",
        "project_use_autoid": "0",
        "project_autoid_aetitle": "",
        "project_features___0": "1",
        "project_features___1": "0",
        "project_features___2": "1",
        "project_import_rule_1_tag": "",
        "project_import_rule_1_regexp": "",
    }
    return row | fields


def snapshot(projects: list[dict[str, str]], routing: list[dict[str, str]] = []) -> Snapshot:  # noqa: B006
    return Snapshot(
        read_at=datetime(2026, 11, 28, tzinfo=UTC),
        projects=projects,
        routing=routing,
        routing_labels={"3": "MEMO"},
    )


def test_a_redcap_project_takes_its_destination_from_the_file_and_its_rules_from_redcap() -> None:
    catalog, warnings = merge(FILE, snapshot([project_row("MEMO")]))
    assert warnings == []
    memo = catalog.by_name["MEMO"]
    assert memo.participant_pattern == "^MEMO[0-9]{3}$"  # REDCap wins over the file
    assert memo.destinations[0].aet == "RPACS"  # the file's destination
    assert memo.deidentification.profile == "basic"
    assert memo.approval_end == date(2027, 12, 31)
    assert memo.features.drop_presentation_states and memo.features.drop_secondary_captures
    assert not memo.features.never_mask_burned_in
    assert "LOCAL" in catalog.by_name  # projects only in the file stay


def test_a_project_only_in_redcap_uses_the_defaults_and_autoid_needs_its_ae_title() -> None:
    rows = [
        project_row("NEW", project_use_autoid="1", project_autoid_aetitle="NEWAUTO"),
        project_row("HALF", project_use_autoid="1"),  # AutoID without AE title: refused
        project_row("OFF", project_active="0"),
    ]
    catalog, warnings = merge(FILE, snapshot(rows))
    assert catalog.by_name["NEW"].destinations[0].kind == "outbox"
    assert catalog.by_name["NEW"].autoid.called_aet == "NEWAUTO"
    assert "HALF" not in catalog.by_name
    assert any("HALF" in w and "called_aet" in w for w in warnings)
    assert catalog.by_name["OFF"].active is False


def test_without_defaults_a_redcap_only_project_is_left_out_with_a_warning() -> None:
    bare = parse_catalog('{"projects": []}')
    catalog, warnings = merge(bare, snapshot([project_row("NEW")]))
    assert catalog.projects == []
    assert warnings == ["project NEW: no destination (projects file entry or defaults)"]


def test_routing_rules_use_the_dropdown_label_and_skip_inactive_or_unknown_projects() -> None:
    routing = [
        {"record_id": "a", "routing_active": "1", "routing_dest_project": "3",
         "routing_incoming_aetitle": "MEMOAE", "routing_sending_aetitle": "",
         "routing_allowed_patientid": "^MEMO", "routing_allowed_patientname": "",
         "routing_event_name": "baseline"},
        {"record_id": "b", "routing_active": "0", "routing_dest_project": "3"},
        {"record_id": "c", "routing_active": "1", "routing_dest_project": "NOPE"},
        {"record_id": "d", "routing_active": "1", "routing_dest_project": "3",
         "routing_allowed_patientid": "(unclosed"},
    ]  # fmt: skip
    catalog, warnings = merge(FILE, snapshot([project_row("MEMO")], routing))
    assert [(r.project, r.called_aet, r.calling_aet, r.event) for r in catalog.routing] == [
        ("MEMO", "MEMOAE", None, "baseline")
    ]
    assert len(warnings) == 2  # c (unknown project) and d (bad regex)


def test_saved_catalog_is_what_the_services_read_and_the_snapshot_is_the_last_good_copy(
    tmp_path: Path,
) -> None:
    shot = snapshot([project_row("MEMO", project_import_rule_1_tag="0032,4000",
                                 project_import_rule_1_regexp="^(.*)$")])  # fmt: skip
    catalog, _ = merge(FILE, shot)
    save(tmp_path, shot, catalog)
    again = load_catalog(tmp_path / "projects.json")
    assert again == catalog
    assert again.by_name["MEMO"].header_rewrite is not None
    assert load_snapshot(tmp_path) == shot
    assert (tmp_path / "projects.json").stat().st_mode & 0o007 == 0  # nothing for others
