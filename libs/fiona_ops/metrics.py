"""The heartbeat's Prometheus metrics; ``peer`` is a configured name, an AE title, ``redcap`` or
``nats``: never an identifier."""

from prometheus_client import Counter, Gauge

PEER_UP = Gauge(
    "fiona_peer_up",
    "1 when the last check of the peer succeeded (C-ECHO, REDCap API version, NATS ping)",
    ["peer"],
)
PEER_RTT = Gauge(
    "fiona_peer_rtt_seconds",
    "Seconds from connecting to the answer of the last successful check (absent while down)",
    ["peer"],
)
CHECKS = Counter("fiona_peer_checks_total", "Peer checks, by outcome (up, down)", ["outcome"])
