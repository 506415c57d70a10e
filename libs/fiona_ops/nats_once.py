"""A NATS connection for someone waiting (an admin at ``fiona pacs``, a heartbeat round).

:func:`fiona_common.bus.connect` is for services: it keeps retrying a NATS that is down. This
one gives up within ``limit`` seconds, quietly: the caller reports the outcome once.
"""

import asyncio

import nats
from nats.aio.client import Client

from fiona_common.bus import NATS_DOWN
from fiona_common.errors import Unavailable


async def connect_once(url: str, name: str, limit: float) -> Client:
    """Connected within ``limit`` seconds, or :class:`Unavailable`."""

    async def quiet(*_args: object) -> None:
        pass

    try:
        client: Client = await asyncio.wait_for(
            nats.connect(
                servers=[url],
                name=name,
                connect_timeout=limit,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=quiet,
                disconnected_cb=quiet,
            ),
            limit * 2,
        )
    except NATS_DOWN as err:
        raise Unavailable(f"NATS at {url} not reachable: {type(err).__name__}") from None
    return client
