"""A NATS connection for someone waiting (an admin at ``fiona pacs``, a heartbeat round).

:func:`fiona_common.bus.connect` is for services: it keeps retrying a NATS that is down. This
one gives up within ``limit`` seconds, quietly: the caller reports the outcome once.
"""

import asyncio

import nats
from nats.aio.client import Client

from fiona_common.bus import NATS_DOWN
from fiona_common.errors import Unavailable
from fiona_common.nats_auth import NatsTarget, as_target, refused


async def connect_once(target: NatsTarget | str, name: str, limit: float) -> Client:
    """Connected within ``limit`` seconds, or :class:`Unavailable` (:class:`ConfigError`: NATS
    refused the credentials or TLS)."""
    target = as_target(target)

    async def quiet(*_args: object) -> None:
        pass

    try:
        client: Client = await asyncio.wait_for(
            nats.connect(
                name=name,
                connect_timeout=limit,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=quiet,
                disconnected_cb=quiet,
                **target.connect_options(),
            ),
            limit * 2,
        )
    except NATS_DOWN as err:
        raise refused(target, err) or Unavailable(
            f"NATS at {target} not reachable: {type(err).__name__}"
        ) from None
    return client
