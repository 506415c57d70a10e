import grp
import os
import stat
from pathlib import Path

import pytest

from fiona_common import layout as layout_module
from fiona_common.errors import BadInput, ConfigError
from fiona_common.layout import Layout, group_id, is_valid_uid, write_atomic


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


def other_group() -> int:
    """A group of this machine that is not the test process's own (root here: any will do)."""
    return next(g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, os.getgid()))


def test_a_shared_group_reads_the_data_and_drops_into_the_inbox_but_not_secrets(
    tmp_path: Path,
) -> None:
    gid = other_group()
    layout = Layout(tmp_path / "data")
    layout.ensure(gid)
    layout.ensure(gid)  # idempotent
    for path in (layout.site_dir, layout.archive_dir, layout.outbox_dir, layout.quarantine_dir):
        assert (path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (gid, 0o2750), path
    assert stat.S_IMODE(layout.inbox_dir.stat().st_mode) == 0o2770
    for private in (layout.config_dir, layout.state_dir):
        assert private.stat().st_gid != gid and not private.stat().st_mode & stat.S_ISGID
    # What FIONA writes later below a shared folder belongs to the group (set-group-ID).
    study = layout.study_archive_dir("1.2.3")
    study.mkdir(mode=0o750)
    write_atomic(study / "MR.1.2.3.4", b"DICM")
    for made in (study, study / "MR.1.2.3.4"):
        assert made.stat().st_gid == gid and not made.stat().st_mode & 0o007


def test_an_unknown_shared_group_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="no group 'no-such-group-here'"):
        group_id("no-such-group-here")
    assert group_id(None) is None and group_id("4") == 4


def test_write_atomic_fsyncs_unless_told_the_file_is_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(layout_module.os, "fsync", synced.append)
    write_atomic(tmp_path / "scratch", b"x", durable=False)
    assert synced == [] and (tmp_path / "scratch").read_bytes() == b"x"
    write_atomic(tmp_path / "kept", b"y")
    assert len(synced) == 2  # the file, then its folder
