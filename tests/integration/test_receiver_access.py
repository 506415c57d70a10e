"""Who may send: allow-lists per listener, the config/enabled switch, SITES listeners."""

from __future__ import annotations

import json
from pathlib import Path

from tests.builders import write_series
from tests.fiona_process import Receiver, read_events
from tests.integration.conftest import wait_until
from tests.peers import NatsServer, echo_scu, free_port, store_scu


def echo_ok(port: int, calling_aet: str = "ECHOSCU") -> bool:
    return echo_scu("127.0.0.1", port, calling_aet=calling_aet, check=False).returncode == 0


def test_calling_aet_allow_list_rejects_others_at_association(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    extra = {"FIONA_RECEIVER__ALLOWED_CALLING_AETS": "SCANNER1,PACS"}
    with Receiver(tmp_path / "rx", tmp_path / "data", nats_server.url, extra) as rx:
        assert echo_ok(rx.port, "SCANNER1")
        assert not echo_ok(rx.port, "INTRUDER")
        result = store_scu(
            "127.0.0.1",
            rx.port,
            write_series(tmp_path / "in", 1),
            calling_aet="INTRUDER",
            check=False,
            extra_args=["-v"],
        )
        assert "Association Rejected" in result.stdout + result.stderr
        assert rx.archived() == []
        assert rx.metric("fiona_receiver_associations_total", outcome="rejected_calling_aet") == 2


def test_peer_address_allow_list(tmp_path: Path, nats_server: NatsServer) -> None:
    extra = {"FIONA_RECEIVER__ALLOWED_PEERS": "10.0.0.0/8"}
    with Receiver(tmp_path / "rx", tmp_path / "data", nats_server.url, extra) as rx:
        assert not echo_ok(rx.port)
    extra = {"FIONA_RECEIVER__ALLOWED_PEERS": "10.0.0.0/8,127.0.0.0/8"}
    with Receiver(tmp_path / "rx2", tmp_path / "data", nats_server.url, extra) as rx:
        assert echo_ok(rx.port)


def test_enabled_switch_turns_receiving_off_and_on_without_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    switch = receiver.datadir / "config" / "enabled"
    assert echo_ok(receiver.port)
    switch.write_text("010")
    wait_until(lambda: not echo_ok(receiver.port), timeout=5, what="rejection")
    assert receiver.metric("fiona_receiver_associations_total", outcome="rejected_disabled") >= 1
    switch.write_text("110")
    wait_until(lambda: echo_ok(receiver.port), timeout=5, what="acceptance")
    switch.unlink()
    assert echo_ok(receiver.port)


def test_sites_section_opens_its_own_listener_with_its_own_data_dir(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    site_port = free_port()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "DICOMAETITLE": "FIONA",
                "SCANNERIP": "10.1.1.1",
                "SITES": {
                    "PCGC": {
                        "DICOMPORT": site_port,
                        "DICOMAETITLE": "PCGCFIONA",
                        "DATADIR": str(tmp_path / "dataPCGC"),
                        "ALLOWED_CALLING_AETS": ["PCGCSCANNER"],
                    }
                },
            }
        )
    )
    extra = {"FIONA_CONFIG": str(config)}
    with Receiver(tmp_path / "rx", tmp_path / "data", nats_server.url, extra) as rx:
        assert not echo_ok(site_port, "OTHER")
        store_scu(
            "127.0.0.1",
            site_port,
            write_series(tmp_path / "in", 3),
            calling_aet="PCGCSCANNER",
            called_aet="PCGCFIONA",
        )
        assert rx.archived() == []
        assert len(list((tmp_path / "dataPCGC/site/archive").rglob("MR.*"))) == 3
        wait_until(lambda: len(read_events(nats_server.url)) == 3, what="events")
        assert {e["site"] for e in read_events(nats_server.url)} == {"PCGC"}
