"""``fiona status``: each service's health, backlog and last errors, plus NATS streams."""

import asyncio
import json
import re
import sys
import urllib.error
import urllib.request
from typing import Any

from fiona_common.bus import NATS_DOWN, STREAMS, connect
from fiona_common.errors import ConfigError, Unavailable
from fiona_common.nats_auth import NatsTarget, nats_target
from fiona_common.settings import Settings


def service_ports(settings: Settings) -> dict[str, int]:
    """Where each service serves /readyz (from its settings section)."""
    return {
        "receiver": settings.receiver.http_port,
        "classifier": settings.classifier.http_port,
        "arrival": settings.arrival.http_port,
        "redcap_sync": settings.redcap_sync.http_port,
        "exporter": settings.exporter.http_port,
        "heartbeat": settings.heartbeat.http_port,
    }


def probe(port: int, timeout: float = 2.0) -> dict[str, Any]:
    """The service's /readyz document, or why it could not be read."""
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except urllib.error.HTTPError as err:  # 503: not ready, but it answered
        answered: dict[str, Any] = json.loads(err.read() or b"{}")
        return answered or {"ready": False, "error": f"HTTP {err.code}"}
    except (OSError, ValueError) as err:
        return {"ready": False, "error": f"not reachable ({type(err).__name__})"}


_PARTITION = re.compile(r"-p\d+$")


async def stream_figures(nats: NatsTarget | str) -> dict[str, Any]:
    """Messages per stream and pending work per durable consumer."""
    try:
        bus = await connect(nats, "fiona-status")
    except (Unavailable, ConfigError) as err:  # the message masks a password in the URL
        return {"connected": False, "error": str(err)}
    figures: dict[str, Any] = {"connected": True, "streams": {}}
    try:
        for spec in STREAMS:
            try:
                info = await bus.js.stream_info(spec.name)
            except NATS_DOWN:
                figures["streams"][spec.name] = {"missing": True}
                continue
            consumers: dict[str, int] = {}
            for c in await bus.js.consumers_info(spec.name):
                name = _PARTITION.sub("", c.name)  # a service's partitions add up to one line
                pending = (c.num_pending or 0) + (c.num_ack_pending or 0)
                consumers[name] = consumers.get(name, 0) + pending
            figures["streams"][spec.name] = {
                "messages": info.state.messages,
                "consumer_backlog": consumers,
            }
    finally:
        await bus.nc.close()
    return figures


def print_status(settings: Settings, services: list[str], as_json: bool = False) -> int:
    ports = service_ports(settings)
    report: dict[str, Any] = {name: probe(ports[name]) for name in services if name in ports}
    report["nats"] = asyncio.run(stream_figures(nats_target(settings)))
    healthy = all(report[s].get("ready") for s in services if s in ports) and bool(
        report["nats"].get("connected")
    )
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_table(report, services)
    return 0 if healthy else 1


def _print_table(report: dict[str, Any], services: list[str]) -> None:
    for name in services:
        entry = report.get(name, {})
        state = "ready" if entry.get("ready") else "NOT READY"
        figures = dict(entry.get("details", {}))
        peers = figures.pop("peers", {})
        details = ", ".join(f"{k}={v}" for k, v in figures.items())
        print(f"{name:<12} {state:<10} {details or entry.get('error', '')}")
        for peer, check in sorted(peers.items()):
            print(f"{'':<12} {_peer_line(peer, check)}")
        for err in entry.get("last_errors", [])[-3:]:
            print(f"{'':<12} last error: {err['error']}")
    nats = report["nats"]
    if not nats.get("connected"):
        print(f"{'nats':<12} {'DOWN':<10} {nats.get('error', '')}")
        return
    print(f"{'nats':<12} {'up':<10}")
    for name, figures in nats["streams"].items():
        print(f"{'':<12} stream {name}: {figures}")


def _peer_line(peer: str, check: dict[str, Any]) -> str:
    """One peer as the heartbeat last saw it: ``peer RPACS (destination) up, 12.5 ms``."""
    what = f"peer {peer} ({check.get('kind', '?')})"
    if check.get("up"):
        return f"{what} up, {check.get('rtt_ms')} ms"
    return f"{what} DOWN: {check.get('error', 'no answer')}"
