"""The janitor's decisions (plain data in, plan out) and its file work on a temporary folder."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fiona_common.errors import ConfigError
from fiona_common.layout import Layout
from fiona_common.settings import Settings
from fiona_ops.janitor import (
    Plan,
    Policy,
    Reason,
    Standing,
    Study,
    deletion_reason,
    plan_deletions,
    standing_of,
)
from fiona_ops.janitor_files import STALE_GRACE_SECONDS, Sweep, Usage, leftovers, study_files
from services.redcap_sync.registry import Route, StudyRecord, Transfer, TransferState

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MB = 1_000_000
POLICY = Policy(high_water=0.85, low_water=0.75, min_age=timedelta(days=7))
DISK = 100 * MB


def study(uid: str, days_old: float, standing: Standing, size_mb: int = 5) -> Study:
    return Study("default", uid, size_mb * MB, NOW - timedelta(days=days_old), standing)


def plan(used_mb: int, studies: list[Study], policy: Policy = POLICY) -> Plan:
    return plan_deletions(["default"], Usage(used_mb * MB, DISK), studies, policy, NOW)


def deleted(result: Plan) -> list[str]:
    return [d.study.study_uid for d in result.deletions]


def record(*states: TransferState) -> StudyRecord:
    transfers = {
        f"t{i}": Transfer(id=f"t{i}", project="P", subject="S", route=Route.MANUAL, state=s)
        for i, s in enumerate(states)
    }
    return StudyRecord(site="default", study_uid="1.2", transfers=transfers)


# --------------------------------------------------------------------------- the plan


def test_nothing_is_deleted_at_or_below_high_water() -> None:
    old = [study("1.1", 100, Standing.DELIVERED)]
    assert plan(85, old).deletions == []


def test_oldest_delivered_studies_go_first_until_below_low_water() -> None:
    studies = [
        study("1.3", 30, Standing.DELIVERED),
        study("1.1", 50, Standing.DELIVERED),
        study("1.2", 40, Standing.DELIVERED),
        study("1.4", 20, Standing.DELIVERED),
    ]
    result = plan(90, studies)  # 90 -> 85 -> 80 -> 75 (not below yet) -> 70
    assert deleted(result) == ["1.1", "1.2", "1.3", "1.4"]
    assert result.expected.used_bytes == 70 * MB
    assert deleted(plan(88, studies)) == ["1.1", "1.2", "1.3"]  # 88 -> 73: below, stop
    assert all(d.reason is Reason.DELIVERED for d in result.deletions)


def test_studies_not_delivered_everywhere_are_kept_without_force() -> None:
    studies = [
        study("1.1", 60, Standing.PENDING),
        study("1.2", 59, Standing.FAILED),
        study("1.3", 58, Standing.UNASSIGNED),
        study("1.4", 57, Standing.UNREGISTERED),
        study("1.5", 10, Standing.DELIVERED, size_mb=20),
    ]
    result = plan(90, studies)
    assert deleted(result) == ["1.5"]
    assert result.kept == {
        Standing.PENDING: 1,
        Standing.FAILED: 1,
        Standing.UNASSIGNED: 1,
        Standing.UNREGISTERED: 1,
    }


def test_force_deletes_them_too_oldest_first() -> None:
    studies = [
        study("1.1", 60, Standing.PENDING),
        study("1.2", 59, Standing.FAILED, size_mb=7),
        study("1.5", 10, Standing.DELIVERED),
    ]
    forced = Policy(0.85, 0.75, timedelta(days=7), force=True)
    result = plan(86, studies, forced)  # 86 -> 81 -> 74: below low water
    assert deleted(result) == ["1.1", "1.2"]
    assert [d.reason for d in result.deletions] == [Reason.FORCED, Reason.FORCED]


def test_studies_younger_than_the_minimum_age_are_never_deleted() -> None:
    forced = Policy(0.85, 0.75, timedelta(days=7), force=True)
    young = [study("1.1", 6.9, Standing.DELIVERED), study("1.2", 1, Standing.PENDING)]
    result = plan(99, young, forced)
    assert result.deletions == [] and result.kept == {}


def test_a_study_changed_recently_counts_as_young_by_its_last_change() -> None:
    # last_change is the later of completion and newest file: a reopened study is young again
    assert plan(99, [study("1.1", 3, Standing.DELIVERED)]).deletions == []


# --------------------------------------------------------------------------- standing


def test_standing_comes_from_the_transfer_states() -> None:
    newest = NOW - timedelta(days=30)
    delivered, failed, given_up = (
        TransferState.DELIVERED,
        TransferState.FAILED,
        TransferState.GIVEN_UP,
    )
    assert standing_of(record(delivered, delivered), None, newest) is Standing.DELIVERED
    assert standing_of(record(delivered, given_up), None, newest) is Standing.FAILED
    assert standing_of(record(failed, TransferState.REQUESTED), None, newest) is Standing.PENDING
    assert standing_of(record(TransferState.IN_PROGRESS), None, newest) is Standing.PENDING
    assert standing_of(record(), None, newest) is Standing.UNASSIGNED
    assert standing_of(None, None, newest) is Standing.UNREGISTERED


def test_a_tombstone_finishes_an_interrupted_deletion_but_not_a_resent_study() -> None:
    purged_at = NOW - timedelta(days=1)
    assert standing_of(None, purged_at, NOW - timedelta(days=30)) is Standing.PURGED
    assert standing_of(None, purged_at, NOW) is Standing.UNREGISTERED  # sent again since
    assert deletion_reason(Standing.PURGED, force=False) is Reason.RESUMED
    assert deletion_reason(Standing.UNASSIGNED, force=False) is None
    assert deletion_reason(Standing.UNASSIGNED, force=True) is Reason.FORCED


def test_low_water_above_high_water_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIONA_JANITOR__LOW_WATER_PERCENT", "90")
    with pytest.raises(ConfigError, match="LOW_WATER_PERCENT"):
        Settings.load(None)


def test_policy_reads_percent_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIONA_JANITOR__HIGH_WATER_PERCENT", "90")
    policy = Policy.of(Settings.load(None), force=False)
    assert (policy.high_water, policy.low_water, policy.min_age) == (0.9, 0.75, timedelta(days=7))


# --------------------------------------------------------------------------- files


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s modification time (of a link: the link's own) ``seconds`` back."""
    when = NOW.timestamp() - seconds
    os.utime(path, (when, when), follow_symlinks=False)


def link(path: Path, target: str, seconds_old: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    age(path, seconds_old)
    return path


def test_sweep_removes_dangling_links_orphaned_summaries_and_emptied_folders(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    old, fresh = STALE_GRACE_SECONDS * 2, 60.0
    series = layout.raw_dir / "1.2" / "1.2.3"
    gone_link = link(series / "1.2.3.4", "../../../archive/scp_1.2/MR.1.2.3.4", old)
    summary = layout.raw_dir / "1.2" / "1.2.3.json"
    summary.write_text("{}")
    age(summary, old)
    lonely = layout.raw_dir / "1.5" / "1.5.1.json"  # its series folder is gone too
    lonely.parent.mkdir()
    lonely.write_text("{}")
    age(lonely, old)
    (layout.archive_dir / "scp_1.3").mkdir(parents=True)
    alive = link(layout.raw_dir / "1.3" / "1.3.1" / "1.3.1.1", "../../../archive/scp_1.3", old)
    new_dangling = link(layout.raw_dir / "1.4" / "1.4.1" / "1.4.1.1", "../../nowhere", fresh)
    participant = link(layout.participants_dir / "PAT1" / "20240101_1200", "../../raw/1.9", fresh)
    unrelated = link(layout.participants_dir / "PAT2" / "20240101_1200", "../../raw/1.8", fresh)

    dry = Sweep(NOW.timestamp(), frozenset({"1.9"}), dry_run=True)
    for root in (layout.raw_dir, layout.participants_dir):
        dry.tree(root, summaries=root == layout.raw_dir)
    assert gone_link.is_symlink() and summary.exists()  # a dry run removes nothing

    sweep = Sweep(NOW.timestamp(), frozenset({"1.9"}))
    sweep.tree(layout.raw_dir, summaries=True)
    sweep.tree(layout.participants_dir)
    # folders: raw/1.2/1.2.3, raw/1.2, raw/1.5 and participants/PAT1
    assert (sweep.links, sweep.summaries, sweep.folders) == (2, 2, 4)
    assert (dry.links, dry.summaries, dry.folders) == (2, 2, 4)
    assert not (layout.raw_dir / "1.2").exists() and not lonely.parent.exists()
    assert not participant.parent.exists()  # a link to a study deleted now goes at once
    assert alive.is_symlink() and new_dangling.is_symlink() and unrelated.is_symlink()


def test_leftovers_are_folders_where_nothing_changed_for_the_maximum_age(tmp_path: Path) -> None:
    day = 86400.0
    stale, busy, fresh = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (stale, busy, fresh):
        (folder / "x").mkdir(parents=True)
        (folder / "x" / "f.dcm").write_bytes(b"1")
        age(folder / "x" / "f.dcm", 10 * day)
        age(folder / "x", 10 * day)
        age(folder, 10 * day)
    age(busy / "x" / "f.dcm", day)  # one file written yesterday: still in use
    age(fresh, day)
    assert leftovers(tmp_path, NOW.timestamp(), 3 * day) == [stale]
    assert leftovers(tmp_path / "missing", NOW.timestamp(), 3 * day) == []


def test_a_study_s_files_are_removed_with_the_archive_last(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    (layout.srs_dir / "ACME" / "1.2").mkdir(parents=True)
    (layout.srs_dir / "ACME" / "1.22").mkdir(parents=True)
    layout.arrived_dir.mkdir(parents=True)
    for name in ("SCU FIONA 10.0.0.1 scp_1.2", "SCU FIONA 10.0.0.1 1.2 1.2.3", "SCU X y scp_1.22"):
        (layout.arrived_dir / name).touch()
    files = study_files(layout, "1.2")
    assert files[0] == layout.srs_dir / "ACME" / "1.2"
    assert {p.name for p in files[1:3]} == {
        "SCU FIONA 10.0.0.1 scp_1.2",
        "SCU FIONA 10.0.0.1 1.2 1.2.3",
    }
    assert files[3:] == [layout.raw_dir / "1.2", layout.archive_dir / "scp_1.2"]
