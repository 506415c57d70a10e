"""Which peers the heartbeat checks, and how one check's outcome is judged (no network)."""

import asyncio
from pathlib import Path

from fiona_common.errors import Unavailable
from fiona_common.projects import parse_catalog
from fiona_common.settings import PacsNode, Settings
from fiona_ops.heartbeat import check
from fiona_ops.peers import Peer, configured_peers, destinations

CATALOG = parse_catalog(
    """{"projects": [
      {"name": "P1", "participant_pattern": "^P1", "destinations": [
        {"kind": "dicom", "aet": "RPACS", "host": "10.0.0.5", "port": 104},
        {"kind": "outbox"}]},
      {"name": "P2", "participant_pattern": "^P2", "destinations": [
        {"kind": "dicom", "aet": "RPACS", "host": "10.0.0.5", "port": 104},
        {"kind": "dicom", "aet": "SHARED", "host": "10.0.0.6", "port": 104},
        {"kind": "dicom", "aet": "SHARED", "host": "10.0.0.7", "port": 11112, "tls": true}]}
    ]}"""
)


def settings(**values: object) -> Settings:
    return Settings.model_validate({"datadir": Path("/nonexistent"), **values})


def test_each_destination_endpoint_is_checked_once_named_by_its_ae_title() -> None:
    found = {d.name: d for d in destinations(CATALOG, "FIONA")}
    assert set(found) == {"RPACS", "SHARED@10.0.0.6:104", "SHARED@10.0.0.7:11112"}
    assert found["SHARED@10.0.0.7:11112"].tls is not None
    assert {d.calling_aet for d in found.values()} == {"FIONA"}


def test_pacs_nodes_destinations_redcap_and_nats_are_all_peers() -> None:
    nodes = {
        "CLINICAL": PacsNode(aet="RPACS", host="10.0.0.5", port=104),  # also a destination
        "QUIET": PacsNode(aet="Q", host="10.0.0.9", port=104, heartbeat=False),
    }
    redcap = {"redcap": {"url": "https://redcap.example.org/api/"}}
    peers = configured_peers(
        settings(pacs_nodes=nodes, redcap_sync=redcap), CATALOG, "nats://127.0.0.1:4222"
    )
    assert [(p.name, p.kind) for p in peers] == [
        ("CLINICAL", "pacs"),
        ("SHARED@10.0.0.6:104", "destination"),
        ("SHARED@10.0.0.7:11112", "destination"),
        ("redcap", "redcap"),
        ("nats", "nats"),
    ]


def test_without_configuration_only_nats_is_checked() -> None:
    assert [p.name for p in configured_peers(settings(), None, "nats://x:4222")] == ["nats"]


async def test_a_check_is_up_with_its_time_or_down_with_the_reason() -> None:
    async def answers() -> float:
        return 0.012

    async def refuses() -> float:
        raise Unavailable("RPACS (RPACS@10.0.0.5:104): not reachable")

    async def hangs() -> float:
        await asyncio.sleep(60)
        return 0.0

    up = await check(Peer("A", "pacs", answers), 1.0)
    assert up.up and up.detail() == {"kind": "pacs", "up": True, "rtt_ms": 12.0}
    down = await check(Peer("B", "destination", refuses), 1.0)
    assert not down.up and "not reachable" in str(down.detail()["error"])
    late = await check(Peer("C", "pacs", hangs), 0.05)
    assert not late.up and late.error == "no answer within 0 s"
