"""What the whole flow leaves on disk: nothing world-writable, secrets readable by FIONA only."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.hostile.flow import FlowRun


def _modes(root: Path) -> dict[Path, int]:
    """Mode bits of every file and directory under ``root`` (symbolic links skipped)."""
    found = {root: root.lstat().st_mode}
    for path in root.rglob("*"):
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode):
            found[path] = mode
    return found


def test_nothing_in_the_data_directory_is_world_writable(flow_run: FlowRun) -> None:
    modes = _modes(flow_run.datadir)
    assert len(modes) > 30  # the flow really ran: archive, raw, outbox, quarantine, state
    world_writable = [f"{oct(m & 0o7777)} {p}" for p, m in modes.items() if m & stat.S_IWOTH]
    assert not world_writable, "\n".join(world_writable)
    wide_open = [str(p) for p, m in modes.items() if m & 0o777 == 0o777]
    assert not wide_open, "\n".join(wide_open)


def test_no_folder_or_file_with_patient_data_is_readable_by_others(flow_run: FlowRun) -> None:
    data = flow_run.datadir
    readable = [
        f"{oct(m & 0o777)} {p}"
        for folder in ("site/archive", "outbox", "quarantine", "state")
        for p, m in _modes(data / folder).items()
        if m & stat.S_IROTH
    ]
    assert not readable, "\n".join(readable)


def test_no_file_with_patient_data_is_readable_by_others(flow_run: FlowRun) -> None:
    data = flow_run.datadir
    readable = [
        f"{oct(m & 0o777)} {p}"
        for folder in ("site/archive", "outbox", "quarantine", "state")
        for p, m in _modes(data / folder).items()
        if stat.S_ISREG(m) and m & stat.S_IROTH
    ]
    assert not readable, "\n".join(readable)


def test_secrets_are_readable_by_their_owner_only(flow_run: FlowRun) -> None:
    keys = [p for p in flow_run.secret_files if flow_run.datadir in p.parents]
    assert {p.name for p in keys} >= {"identity.key", "deid.key"}
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    folder = flow_run.datadir / "state" / "secrets"
    assert not stat.S_IMODE(folder.stat().st_mode) & 0o077, oct(folder.stat().st_mode)


def test_the_shared_group_owns_the_data_but_not_the_secrets(flow_run: FlowRun) -> None:
    data, gid = flow_run.datadir, flow_run.shared_gid
    made = [p for folder in ("site/archive", "site/raw", "outbox") for p in _modes(data / folder)]
    assert len(made) > 10
    foreign = [str(p) for p in made if p.lstat().st_gid != gid]
    assert not foreign, "\n".join(foreign)
    assert all(p.stat().st_gid != gid for p in flow_run.secret_files)
    assert (data / "state").stat().st_gid != gid
