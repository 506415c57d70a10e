"""The janitor and the receiver's disk reserve on a small, really filling file system (tmpfs).

``fiona janitor`` runs as a process against a real nats-server holding the study registry; the
studies are written straight into the data directory (archive, raw links, series summaries,
participant links, deliveries) with the ages and registry records each case needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.js.errors import KeyNotFoundError

from fiona_common.logs import short_hash
from services.exporter.ledger import Ledger
from services.redcap_sync.registry import Route, StudyRecord, Transfer, TransferState
from tests.builders import dataset_bytes, new_uid, write_series
from tests.fiona_process import REPO, FionaService, Receiver
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, free_port, store_scu

KIB = 1024
NOW = datetime.now(UTC)
DAY = 86400.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted after the test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0750", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def used_share(path: Path) -> float:
    fs = os.statvfs(path)
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    return used / (used + fs.f_bavail * fs.f_frsize)


def fill_to(path: Path, share: float, name: str = "filler") -> None:
    """Write a file under ``path`` that brings the file system to ``share`` used."""
    fs = os.statvfs(path)
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    size = used + fs.f_bavail * fs.f_frsize
    (path / name).write_bytes(b"\1" * ((int(share * size) - used) // 4096 * 4096))


def set_age(path: Path, days: float) -> None:
    when = NOW.timestamp() - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)


@dataclass
class Case:
    """One study on disk and its registry record (``states`` None: unassigned)."""

    name: str
    days_old: float
    size_kib: int
    states: list[TransferState] | None
    uid: str = ""

    def __post_init__(self) -> None:
        self.uid = new_uid()

    @property
    def key(self) -> str:
        return f"default.{self.uid}"

    def transfer(self, i: int, state: TransferState) -> Transfer:
        ident = f"{short_hash(self.uid)}{i}"
        return Transfer(
            id=ident, project="MEMO", subject=f"MEMO{i:03d}", route=Route.MANUAL, state=state
        )


def write_study(data: Path, case: Case) -> None:
    """Archive (two files), raw links and summary, a participant link, all ``days_old``."""
    site = data / "site"
    archive = site / "archive" / f"scp_{case.uid}"
    series = new_uid()
    raw = site / "raw" / case.uid / series
    raw.mkdir(parents=True)
    archive.mkdir(parents=True)
    for i in (1, 2):
        path = archive / f"MR.{series}.{i}"
        path.write_bytes(b"\0" * (case.size_kib // 2 * KIB))
        (raw / f"{series}.{i}").symlink_to(f"../../../archive/scp_{case.uid}/{path.name}")
        set_age(path, case.days_old)
    (raw.parent / f"{series}.json").write_text("{}")
    participant = site / "participants" / f"PAT-{case.name}"
    participant.mkdir(parents=True)
    (participant / "20240101_120000").symlink_to(f"../../raw/{case.uid}")
    set_age(participant / "20240101_120000", case.days_old)


async def write_registry(url: str, cases: list[Case], outbox_case: Case, mapped: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        studies = await js.create_key_value(bucket="fiona_studies")
        unassigned = await js.create_key_value(bucket="fiona_unassigned")
        ledgers = await js.create_key_value(bucket="fiona_ledger")
        for case in cases:
            completed = NOW - timedelta(days=case.days_old)
            transfers = [case.transfer(i, s) for i, s in enumerate(case.states or [])]
            record = StudyRecord(
                site="default",
                study_uid=case.uid,
                completed_at=completed,
                transfers={t.id: t for t in transfers},
            )
            await studies.put(case.key, record.encode())
            if not transfers:
                await unassigned.put(case.key, completed.isoformat().encode())
        ledger = Ledger(mapped_study_uid=mapped).model_dump_json().encode()
        await ledgers.put(f"{outbox_case.transfer(0, TransferState.DELIVERED).id}.0", ledger)
    finally:
        await nc.close()


async def registry_keys(url: str, bucket: str) -> set[str]:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(bucket)
        try:
            return set(await kv.keys())
        except nats.js.errors.NoKeysError:
            return set()
    finally:
        await nc.close()


async def tombstone(url: str, key: str) -> dict[str, object] | None:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value("fiona_purged")
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        return dict(json.loads(entry.value or b"{}"))
    finally:
        await nc.close()


def janitor(data: Path, nats_url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIONA_")}
    env.update(PYTHONPATH=str(REPO), FIONA_DATADIR=str(data), FIONA_NATS_URL=nats_url)
    command = [sys.executable, "-m", "fiona_cli", "janitor", *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def tree(data: Path) -> dict[str, int]:
    """Every path under ``data`` with its size (links: -1)."""
    return {
        str(p.relative_to(data)): -1 if p.is_symlink() else p.lstat().st_size
        for p in sorted(data.rglob("*"))
    }


@dataclass
class World:
    data: Path
    cases: dict[str, Case]
    stale_link: Path
    fresh_dangling: Path
    old_staging: Path
    fresh_staging: Path
    outbox_study: Path
    sent_study: Path

    def archived(self, name: str) -> bool:
        return (self.data / "site" / "archive" / f"scp_{self.cases[name].uid}").exists()


@pytest.fixture
def world(small_disk: Path, nats_server: NatsServer) -> World:
    """Studies of every standing on an 8 MiB disk filled to 89 %, and some dirt to sweep."""
    data = small_disk / "data"
    delivered, failed = TransferState.DELIVERED, TransferState.FAILED
    cases = [
        Case("pending", 30, 384, [delivered, TransferState.REQUESTED]),
        Case("failed", 29, 384, [failed]),
        Case("unassigned", 28, 384, None),
        Case("d1", 20, 512, [delivered]),
        Case("d2", 19, 512, [delivered, delivered]),
        Case("d3", 18, 512, [delivered]),
        Case("young", 1, 512, [delivered]),
    ]
    for case in cases:
        write_study(data, case)
    by_name = {c.name: c for c in cases}
    d1, mapped = by_name["d1"], new_uid()
    outbox_study = data / "outbox" / "MEMO" / "MEMO000" / "_" / mapped
    sent_study = data / "sent" / "MEMO" / "MEMO000" / "_" / mapped
    for folder in (outbox_study, sent_study):
        folder.mkdir(parents=True)
        (folder / "MR.1.dcm").write_bytes(b"\0" * 64 * KIB)
    staging = data / "state" / "staging"
    old_staging, fresh_staging = staging / "0123456789abcdef", staging / "fedcba9876543210"
    for folder, days in ((old_staging, 10), (fresh_staging, 0)):
        folder.mkdir(parents=True)
        (folder / "x.dcm").write_bytes(b"\0" * 128 * KIB)
        set_age(folder / "x.dcm", days)
        set_age(folder, days)
    stale_link = data / "site" / "participants" / "PAT-gone" / "20230101_000000"
    stale_link.parent.mkdir()
    stale_link.symlink_to(f"../../raw/{new_uid()}")
    set_age(stale_link, 3)
    fresh_dangling = data / "site" / "raw" / by_name["young"].uid / "1.2.3" / "1.2.3.4"
    fresh_dangling.parent.mkdir()
    fresh_dangling.symlink_to("../../../archive/scp_1.2.3/MR.1.2.3.4")  # may be in the making
    asyncio.run(write_registry(nats_server.url, cases, d1, mapped))
    fill_to(small_disk, 0.89)
    return World(
        data,
        by_name,
        stale_link,
        fresh_dangling,
        old_staging,
        fresh_staging,
        outbox_study,
        sent_study,
    )


def test_dry_run_prints_the_plan_and_changes_nothing(world: World, nats_server: NatsServer) -> None:
    before = tree(world.data)
    records = asyncio.run(registry_keys(nats_server.url, "fiona_studies"))
    done = janitor(world.data, nats_server.url, "--dry-run")
    assert tree(world.data) == before
    assert asyncio.run(registry_keys(nats_server.url, "fiona_studies")) == records
    for name in ("d1", "d2"):
        assert f"would delete study {short_hash(world.cases[name].uid)}" in done.stdout
    assert short_hash(world.cases["d3"].uid) not in done.stdout
    assert "kept: 1 failed, 1 pending, 1 unassigned" in done.stdout
    assert "would delete 1 leftover" in done.stdout and "1 dangling links" in done.stdout
    assert all(c.uid not in done.stdout for c in world.cases.values())  # hashes only


def test_delivered_studies_go_oldest_first_until_below_low_water_the_rest_only_forced(
    world: World, small_disk: Path, nats_server: NatsServer
) -> None:
    done = janitor(world.data, nats_server.url)
    gone = {"d1", "d2"}
    for name, case in world.cases.items():
        assert world.archived(name) is (name not in gone), name
        assert (world.data / "site" / "raw" / case.uid).exists() is (name not in gone), name
        participant = world.data / "site" / "participants" / f"PAT-{name}"
        assert participant.exists() is (name not in gone), name
    assert used_share(small_disk) < 0.75
    assert world.outbox_study.exists()  # a delivery to collect: never the janitor's to delete
    assert not world.sent_study.exists()
    records = asyncio.run(registry_keys(nats_server.url, "fiona_studies"))
    assert records == {c.key for n, c in world.cases.items() if n not in gone}
    assert asyncio.run(registry_keys(nats_server.url, "fiona_ledger")) == set()
    stone = asyncio.run(tombstone(nats_server.url, world.cases["d2"].key))
    assert stone is not None and stone["reason"] == "delivered"
    # the audit: one JSON line per deletion (hash, size, reason), never a PatientID
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    deletions = [x for x in lines if x["msg"] == "study deleted"]
    assert {x["study"] for x in deletions} == {short_hash(world.cases[n].uid) for n in gone}
    assert all(x["reason"] == "delivered" and x["size_bytes"] > 512 * KIB for x in deletions)
    assert "PAT-" not in done.stdout
    # the dirt: old staging and a stale link gone, fresh ones kept
    assert not world.old_staging.exists() and world.fresh_staging.exists()
    assert not world.stale_link.is_symlink() and not world.stale_link.parent.exists()
    assert world.fresh_dangling.is_symlink()

    fill_to(small_disk, 0.88, "filler2")
    janitor(world.data, nats_server.url, "--force")
    gone |= {"pending", "failed", "unassigned"}
    assert {n for n in world.cases if not world.archived(n)} == gone  # d3 and young stay
    records = asyncio.run(registry_keys(nats_server.url, "fiona_studies"))
    assert records == {world.cases["d3"].key, world.cases["young"].key}
    assert asyncio.run(registry_keys(nats_server.url, "fiona_unassigned")) == set()


class JanitorLoop(FionaService):
    """``fiona janitor --loop``, as ``fiona up`` runs it."""

    def __init__(self, workdir: Path, data: Path, nats_url: str) -> None:
        port = free_port()
        settings = {
            "FIONA_DATADIR": str(data),
            "FIONA_NATS_URL": nats_url,
            "FIONA_JANITOR__HTTP_PORT": str(port),
        }
        super().__init__(workdir, "janitor", settings, port)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fiona_cli", "janitor", "--loop"]


def test_loop_runs_a_round_at_start_and_counts_it_in_its_metrics(
    tmp_path: Path, world: World, small_disk: Path, nats_server: NatsServer
) -> None:
    loop = JanitorLoop(tmp_path / "janitor", world.data, nats_server.url).start()
    try:
        deleted = "fiona_janitor_deleted_studies_total"
        wait_until(lambda: loop.metric(deleted, reason="delivered") == 2, what="a first round")
        assert loop.metric("fiona_janitor_freed_bytes_total") > 1024 * KIB
        assert 0 < loop.metric("fiona_janitor_disk_used_ratio", site="default") < 0.75
        assert loop.metric("fiona_janitor_removed_total", kind="staging") == 1
        assert not world.archived("d1") and world.archived("d3")
    finally:
        loop.stop()


def test_receiver_refuses_objects_below_the_disk_reserve_and_keeps_what_it_stored(
    tmp_path: Path, small_disk: Path, nats_server: NatsServer
) -> None:
    reserve = {"FIONA_RECEIVER__MIN_FREE_BYTES": str(2 * 1024 * KIB)}
    receiver = Receiver(tmp_path / "rx", small_disk / "data", nats_server.url, reserve).start()
    try:
        first = write_series(tmp_path / "a", 3)
        store_scu("127.0.0.1", receiver.port, first)
        stored = {p.name: dataset_bytes(p) for p in receiver.archived()}
        assert len(stored) == 3

        fs = os.statvfs(small_disk)
        free = fs.f_bavail * fs.f_frsize
        (small_disk / "filler").write_bytes(b"\1" * (free - 1536 * KIB))  # 1.5 MiB left
        refused = store_scu(
            "127.0.0.1",
            receiver.port,
            write_series(tmp_path / "b", 2),
            check=False,
            extra_args=["-v"],
        )
        assert refused.returncode != 0
        assert "OutOfResources" in refused.stdout + refused.stderr
        assert {p.name: dataset_bytes(p) for p in receiver.archived()} == stored
        assert list((small_disk / "data" / "site" / ".incoming").iterdir()) == []
        assert receiver.metric("fiona_receiver_refused_disk_reserve_total") >= 1

        (small_disk / "filler").unlink()
        store_scu("127.0.0.1", receiver.port, write_series(tmp_path / "c", 2))
        assert len(receiver.archived()) == 5
    finally:
        receiver.stop()
