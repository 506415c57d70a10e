"""Instance numbers of REDCap repeating rows, handed out by compare-and-set in a real JetStream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fiona_common.bus import connect
from services.redcap_sync.redcap_rows import (
    BUCKET,
    instance_for,
    instances,
    parse_redcap_time,
    redcap_time,
    scope,
)
from tests.peers import NatsServer


async def test_concurrent_writers_never_share_a_number_and_an_item_keeps_its_own(
    nats_server: NatsServer,
) -> None:
    bus = await connect(nats_server.url, "test")
    try:
        kv = await bus.kv(BUCKET)
        where = scope("incoming", "1.2.3", "transfers")
        # Ten writers, each its own item, all at once, REDCap already has rows up to 4.
        got = await asyncio.gather(
            *(instance_for(kv, where, f"t{i}", {}, highest=4) for i in range(10))
        )
        assert sorted(got) == list(range(5, 15))
        # The same item asked again (a resend) and by two writers at once: one number.
        again = await asyncio.gather(*(instance_for(kv, where, "t3", {}, 4) for _ in range(3)))
        assert set(again) == {got[3]}
        # Found in REDCap already: that row's number, not a new one.
        assert await instance_for(kv, where, "known", {"known": 2}, 14) == 2
        # Somebody added rows by hand meanwhile: new numbers start above theirs.
        assert await instance_for(kv, where, "later", {}, highest=40) == 41
        # Another record's rows are numbered on their own.
        assert await instance_for(kv, scope("incoming", "1.2.4", "transfers"), "x", {}, 0) == 1
    finally:
        await bus.close()


def test_rows_of_one_instrument_and_redcap_times() -> None:
    rows = [
        {"redcap_repeat_instrument": "", "redcap_repeat_instance": ""},
        {"redcap_repeat_instrument": "series", "redcap_repeat_instance": "2"},
        {"redcap_repeat_instrument": "transfers", "redcap_repeat_instance": 7},
    ]
    assert [n for n, _ in instances(rows, "transfers")] == [7]
    moment = datetime(2026, 11, 28, 10, 5, 30, tzinfo=UTC)
    text = redcap_time(moment)
    assert len(text) == 16 and text[10] == " "  # YYYY-MM-DD HH:MM, local time
    assert parse_redcap_time(text) == moment.replace(second=0)
    assert parse_redcap_time("") is None and parse_redcap_time("yesterday") is None
