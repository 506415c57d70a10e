from pathlib import Path

import pytest

from fiona_common.errors import BadInput
from fiona_common.layout import Layout, is_valid_uid


@pytest.mark.parametrize(
    "uid", ["1.2.840.10008.5.1.4.1.1.4", "2.25.1234567890", "1", "1.2.3." + "4" * 58]
)
def test_valid_uids_are_accepted(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "..",
        "../etc",
        "1.2..3",
        ".1.2",
        "1.2.",
        "1.2/3",
        "1.2.3\x00",
        "1.a.3",
        "1." + "2" * 63,
        None,
        12345,
        "1.2.3 ",
    ],
)
def test_invalid_uids_are_refused(uid: object) -> None:
    assert not is_valid_uid(uid)


def test_archive_path_follows_the_original_layout(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    path = layout.archive_file("1.2.3", "1.2.3.4", "MR")
    assert path == tmp_path / "site/archive/scp_1.2.3/MR.1.2.3.4"


def test_hostile_uid_never_becomes_a_path(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with pytest.raises(BadInput) as err:
        layout.archive_file("../../etc", "1.2.3", "MR")
    assert err.value.code == "invalid_study_uid"
    with pytest.raises(BadInput):
        layout.archive_file("1.2", "1.2.3", "../x")


def test_resolve_refuses_paths_outside_the_data_directory(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.resolve("site/archive/x") == tmp_path / "site/archive/x"
    assert layout.resolve("site/./archive//x") == tmp_path / "site/archive/x"
    for hostile in ("../outside", "site/../../outside", "/etc/passwd", "..", ".", ""):
        with pytest.raises(BadInput):
            layout.resolve(hostile)


def test_directories_are_created_without_world_access(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    layout.ensure()  # idempotent
    for path in (layout.archive_dir, layout.inbox_dir, layout.quarantine_dir):
        assert path.is_dir()
        assert path.stat().st_mode & 0o007 == 0
