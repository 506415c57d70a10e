import os
from pathlib import Path

import pytest

from fiona_common.layout import Layout, safe_component
from services.classifier import trees


@pytest.mark.parametrize(
    ("patient_id", "expected"),
    [("SUBJ01", "SUBJ01"), ("Doe^Jane 1", "Doe^Jane 1"), ("a/b", "a_b")],
)
def test_patient_ids_become_safe_folder_names(patient_id: str, expected: str) -> None:
    assert safe_component(patient_id) == expected


@pytest.mark.parametrize("hostile", ["..", ".", "../../etc", ".hidden", "/"])
def test_hostile_patient_ids_never_escape(hostile: str) -> None:
    name = safe_component(hostile)
    assert "/" not in name and not name.startswith(".")


def test_missing_date_or_time_uses_the_original_placeholder() -> None:
    assert trees.study_link_name("20240101", "101500") == "20240101_101500"
    assert trees.study_link_name(None, "101500") == "unknown_unknown"
    assert trees.study_link_name("2024/01", "x") == "unknown_unknown"


def test_links_are_relative_idempotent_and_repaired(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    target = layout.archive_dir / "scp_1.2" / "MR.1.2.3"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    link = trees.link_instance(layout, target, "1.2", "1.2.5", "1.2.3")
    assert not os.readlink(link).startswith("/") and link.resolve() == target
    assert not trees.ensure_link(link, target)  # second time: nothing to do
    link.unlink()
    link.symlink_to("/nowhere")
    assert trees.ensure_link(link, target) and link.resolve() == target
    assert trees.count_instances(layout, "1.2", "1.2.5") == 1
