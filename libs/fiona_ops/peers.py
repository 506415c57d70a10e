"""The peers the heartbeat checks, and how each is checked.

- PACS nodes (``PACS_NODES``, unless ``heartbeat`` is false): C-ECHO, named by their config name.
- DICOM destinations of the projects file: C-ECHO, named by their AE title (``AET@host:port``
  when two differ under one title); one that is also a PACS node is checked once, as the node.
- REDCap (when ``REDCAP_SYNC.REDCAP.URL`` is set): the API's ``content=version`` with the
  ``incoming`` token, so a refused token shows as down too; without that token file, any HTTP
  answer counts as reachable. Named ``redcap``.
- NATS: connect, PING/PONG and a JetStream account query. Named ``nats``.

Each check returns seconds from connecting to the answer, or raises :class:`Unavailable`.
"""

import asyncio
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fiona_common.bus import NATS_DOWN
from fiona_common.dicom_client import Tls
from fiona_common.errors import ConfigError, Unavailable
from fiona_common.nats_auth import NatsTarget
from fiona_common.projects import Catalog
from fiona_common.secret_files import read_secret
from fiona_common.settings import RedcapSettings, Settings
from fiona_ops.dicom_peer import DicomPeer, echo
from fiona_ops.nats_once import connect_once

Check = Callable[[], Awaitable[float]]


@dataclass(frozen=True)
class Peer:
    name: str  # the metric label: a configured name, an AE title, "redcap" or "nats"
    kind: str  # pacs, destination, redcap, nats
    check: Check


def configured_peers(
    settings: Settings, catalog: Catalog | None, nats: NatsTarget | str
) -> list[Peer]:
    """Every peer the settings and the projects file name."""
    timeout = settings.heartbeat.timeout_seconds
    nodes = [
        DicomPeer.of_node(name, node, settings.dicomaetitle)
        for name, node in sorted(settings.pacs_nodes.items())
        if node.heartbeat
    ]
    peers = [Peer(p.name, "pacs", _echo_check(_limited(p, timeout))) for p in nodes]
    seen = {(p.aet, p.host, p.port) for p in nodes}
    for dest in destinations(catalog, settings.exporter.calling_aet):
        if (dest.aet, dest.host, dest.port) not in seen:
            seen.add((dest.aet, dest.host, dest.port))
            peers.append(Peer(dest.name, "destination", _echo_check(_limited(dest, timeout))))
    redcap = settings.redcap_sync.redcap
    if redcap.url is not None:
        token = _token_file(settings)
        peers.append(Peer("redcap", "redcap", lambda: check_redcap(redcap, token, timeout)))
    peers.append(Peer("nats", "nats", lambda: check_nats(nats, timeout)))
    return peers


def destinations(catalog: Catalog | None, calling_aet: str) -> list[DicomPeer]:
    """The DICOM destinations of all projects (and the defaults), each endpoint once."""
    if catalog is None:
        return []
    found = [d for p in catalog.projects for d in p.destinations]
    if catalog.defaults is not None:
        found += catalog.defaults.destinations
    endpoints = {}
    for d in found:
        if d.kind == "dicom" and d.aet and d.host and d.port:
            tls = Tls(d.tls_ca_file, d.tls_cert_file, d.tls_key_file) if d.tls else None
            endpoints[(d.aet, d.host, d.port)] = tls
    titles = [aet for aet, _, _ in endpoints]
    return [
        DicomPeer(
            name=aet if titles.count(aet) == 1 else f"{aet}@{host}:{port}",
            aet=aet,
            host=host,
            port=port,
            calling_aet=calling_aet,
            tls=tls,
        )
        for (aet, host, port), tls in endpoints.items()
    ]


def _limited(peer: DicomPeer, timeout: float) -> DicomPeer:
    return DicomPeer(peer.name, peer.aet, peer.host, peer.port, peer.calling_aet, peer.tls, timeout)


def _echo_check(peer: DicomPeer) -> Check:
    async def check() -> float:
        return await asyncio.to_thread(echo, peer)

    return check


def _token_file(settings: Settings) -> Path:
    folder = settings.redcap_sync.redcap.tokens_dir
    return (folder or settings.datadir / "state" / "secrets" / "redcap") / "incoming"


async def check_redcap(redcap: RedcapSettings, token_file: Path, limit: float) -> float:
    return await asyncio.to_thread(_post_version, redcap, token_file, limit)


def _post_version(redcap: RedcapSettings, token_file: Path, timeout: float) -> float:
    token = None
    if token_file.exists():
        try:
            token = read_secret(token_file, "REDCap token", min_length=32).decode()
        except ConfigError as err:
            raise Unavailable(str(err)) from None
    form = {"content": "version", "format": "json", **({"token": token} if token else {})}
    request = urllib.request.Request(
        str(redcap.url), data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    context = ssl.create_default_context(cafile=redcap.ca_bundle)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            answer.read()
    except urllib.error.HTTPError as err:
        if token is not None:
            raise Unavailable(f"REDCap answered HTTP {err.code} to the incoming token") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Unavailable(f"REDCap not reachable: {type(reason).__name__}") from None
    return time.monotonic() - started


async def check_nats(nats: NatsTarget | str, limit: float) -> float:
    started = time.monotonic()
    nc = await connect_once(nats, "fiona-heartbeat", limit)
    try:
        await nc.flush(max(1, round(limit)))
        await nc.jetstream().account_info()
        return time.monotonic() - started
    except NATS_DOWN as err:
        raise Unavailable(f"NATS at {nats}: {type(err).__name__}") from None
    finally:
        await nc.close()
