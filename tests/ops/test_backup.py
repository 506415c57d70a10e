"""Backups without NATS: the files, the manifest, verify, increments and restore."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fiona_common.errors import FionaError, Unavailable
from fiona_common.settings import ClassifierSettings, Settings
from fiona_ops.backup import (
    create_backup,
    read_manifest,
    restore_backup,
    verify_backup,
)
from fiona_ops.backup_files import Kind
from fiona_ops.backup_streams import StreamRecord

KEY = "5ecret-key-0123456789abcdef0123456789"


@dataclass
class NoJetStream:
    """The JetStream side of a backup, empty: these tests are about files."""

    fail: bool = False
    loaded: list[str] = field(default_factory=list)

    def dump(self, folder: Path) -> list[StreamRecord]:
        if self.fail:
            raise Unavailable("NATS at nats://nowhere is not reachable")
        return []

    def next_sequences(self) -> dict[str, int]:
        return {}

    def occupied(self, records: list[StreamRecord]) -> list[str]:
        return []

    def load(self, backup: Path, records: list[StreamRecord]) -> dict[str, tuple[int, int]]:
        self.loaded.append(str(backup))
        return {}


def make_datadir(root: Path, studies: int = 2) -> Path:
    data = root / "data"
    (data / "config").mkdir(parents=True)
    (data / "config" / "config.json").write_text(json.dumps({"DICOMPORT": 11112}))
    (data / "config" / "enabled").write_text("1")
    (data / "config" / "projects.json").write_text(json.dumps({"projects": []}))
    secrets = data / "state" / "secrets"
    secrets.mkdir(parents=True)
    key = secrets / "identity.key"
    key.write_text(KEY)
    key.chmod(0o600)
    (data / "state" / "receiver-watermark.json").write_text('{"published_before": 1.0}')
    for n in range(studies):
        add_object(data, f"1.2.3.{n}", f"1.2.3.{n}.1")
    return data


def add_object(data: Path, study: str, sop: str) -> Path:
    archived = data / "site" / "archive" / f"scp_{study}" / f"MR.{sop}"
    archived.parent.mkdir(parents=True, exist_ok=True)
    archived.write_bytes(b"DICM" + sop.encode() * 100)
    archived.chmod(0o640)
    link = data / "site" / "raw" / study / "1.9" / sop
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(archived, link.parent), link)
    (data / "site" / "raw" / study / "1.9.json").write_text(json.dumps({"NumFiles": "1"}))
    return archived


def settings_for(data: Path, **extra: object) -> Settings:
    return Settings.load(None, datadir=data, **extra)


def test_manifest_lists_every_file_with_checksum_and_mode_but_no_secret(tmp_path: Path) -> None:
    data = make_datadir(tmp_path)
    made = create_backup(settings_for(data), tmp_path / "backups", True, NoJetStream())
    manifest = read_manifest(made)
    names = {e.name: e for e in manifest.files}
    key = names["files/default/state/secrets/identity.key"]
    assert key.mode == "0600" and key.size == len(KEY) and key.site == "default"
    assert names["files/default/site/archive/scp_1.2.3.0/MR.1.2.3.0.1"].mode == "0640"
    link = names["files/default/site/raw/1.2.3.0/1.9/1.2.3.0.1"]
    assert link.kind is Kind.LINK and link.link.startswith("../../../archive/")
    assert "files/default/state/receiver-watermark.json" in names
    assert KEY not in (made / "manifest.json").read_text()
    assert made.name.startswith("fiona-backup-") and not list(made.parent.glob(".*partial"))
    assert made.stat().st_mode & 0o777 == 0o700
    for path in made.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert path.stat().st_mode & 0o777 == 0o600, path
    assert verify_backup(made) == []


def test_verify_finds_a_changed_a_missing_and_an_unlisted_file(tmp_path: Path) -> None:
    data = make_datadir(tmp_path)
    made = create_backup(settings_for(data), tmp_path / "backups", True, NoJetStream())
    archived = made / "files/default/site/archive/scp_1.2.3.0/MR.1.2.3.0.1"
    archived.write_bytes(archived.read_bytes().replace(b"DICM", b"DICN"))
    (made / "files/default/config/enabled").unlink()
    (made / "files/default/config/stray.txt").write_text("?")
    problems = verify_backup(made)
    assert any("MR.1.2.3.0.1: checksum mismatch" in p for p in problems)
    assert any("config/enabled: missing" in p for p in problems)
    assert any("stray.txt: not in the manifest" in p for p in problems)
    (made / "manifest.json").write_text((made / "manifest.json").read_text() + " ")
    assert verify_backup(made) == ["manifest.json does not match manifest.json.sha256"]


def test_incremental_archive_copies_only_new_files(tmp_path: Path) -> None:
    data = make_datadir(tmp_path, studies=3)
    settings = settings_for(data)
    first = create_backup(settings, tmp_path / "backups", True, NoJetStream())
    new = add_object(data, "1.2.3.9", "1.2.3.9.1")
    second = create_backup(settings, tmp_path / "backups", True, NoJetStream())
    manifest = read_manifest(second)
    assert manifest.previous == first.name
    # New: the archive file and its series summary; config files are always copied.
    config_files = sum(1 for e in manifest.files if e.name.startswith("files/default/config"))
    assert manifest.copied == config_files + 4  # + key, watermark, the new summary and object
    assert manifest.linked == 3 + 3  # the three old objects and their summaries
    old = "files/default/site/archive/scp_1.2.3.0/MR.1.2.3.0.1"
    assert (first / old).stat().st_ino == (second / old).stat().st_ino
    copied = second / "files/default/site/archive/scp_1.2.3.9" / new.name
    assert copied.read_bytes() == new.read_bytes()
    assert verify_backup(second) == []
    shutil.rmtree(first)  # each backup is complete on its own
    assert verify_backup(second) == []


def test_restore_brings_back_files_modes_links_and_outside_files(tmp_path: Path) -> None:
    data = make_datadir(tmp_path)
    rules = tmp_path / "etc" / "rules.json"
    rules.parent.mkdir()
    rules.write_text('{"rules": []}')
    settings = settings_for(data, classifier=ClassifierSettings(rules_file=rules))
    made = create_backup(settings, tmp_path / "backups", True, NoJetStream())
    original = {
        p.relative_to(data): (os.readlink(p) if p.is_symlink() else "", p.read_bytes())
        for p in data.rglob("*")
        if p.is_symlink() or p.is_file()
    }
    shutil.rmtree(data)
    rules.unlink()
    state = NoJetStream()
    done = restore_backup(settings, tmp_path / "backups", False, state)
    assert done.backup == made and state.loaded == [str(made)]
    assert rules.read_text() == '{"rules": []}'
    assert {p.relative_to(data) for p in data.rglob("*")} >= set(original)
    for relative, (link, content) in original.items():
        after = data / relative
        assert (os.readlink(after) if link else after.read_bytes()) == (link or content)
    key = data / "state" / "secrets" / "identity.key"
    assert key.read_text() == KEY and key.stat().st_mode & 0o777 == 0o600
    link = data / "site" / "raw" / "1.2.3.1" / "1.9" / "1.2.3.1.1"
    assert link.is_symlink() and link.read_bytes().startswith(b"DICM")
    archived = data / "site" / "archive" / "scp_1.2.3.1" / "MR.1.2.3.1.1"
    assert archived.stat().st_mode & 0o777 == 0o640


def test_restore_refuses_a_data_directory_in_use_unless_forced(tmp_path: Path) -> None:
    data = make_datadir(tmp_path)
    settings = settings_for(data)
    create_backup(settings, tmp_path / "backups", True, NoJetStream())
    restore_backup(settings, tmp_path / "backups", False, NoJetStream())  # all identical: fine
    (data / "state" / "secrets" / "identity.key").write_text("another-key-0123456789abcdef")
    with pytest.raises(FionaError, match="identity.key exists.*--force"):
        restore_backup(settings, tmp_path / "backups", False, NoJetStream())
    restore_backup(settings, tmp_path / "backups", True, NoJetStream())
    assert (data / "state" / "secrets" / "identity.key").read_text() == KEY


def test_a_damaged_backup_is_not_restored(tmp_path: Path) -> None:
    data = make_datadir(tmp_path)
    made = create_backup(settings_for(data), tmp_path / "backups", False, NoJetStream())
    (made / "files/default/config/config.json").write_text("{}")
    state = NoJetStream()
    with pytest.raises(FionaError, match="damaged"):
        restore_backup(settings_for(tmp_path / "fresh"), made, False, state)
    assert not state.loaded and not (tmp_path / "fresh").exists()


def test_a_failed_backup_leaves_nothing_behind(tmp_path: Path) -> None:
    data = make_datadir(tmp_path)
    with pytest.raises(Unavailable):
        create_backup(settings_for(data), tmp_path / "backups", True, NoJetStream(fail=True))
    assert list((tmp_path / "backups").iterdir()) == []


def test_backups_are_refused_inside_the_data_directory(tmp_path: Path) -> None:
    data = make_datadir(tmp_path)
    with pytest.raises(FionaError, match="inside a data directory"):
        create_backup(settings_for(data), data / "outbox" / "b", True, NoJetStream())
