"""The exporter's Prometheus metrics (labels carry project names, never identifiers)."""

from prometheus_client import Counter, Histogram

TRANSFERS = Counter(
    "fiona_exporter_transfers_total",
    "Transfer requests finished, by project and result",
    ["project", "result"],
)
OBJECTS = Counter(
    "fiona_exporter_objects_total",
    "Objects handled, by destination kind and status",
    ["destination", "status"],
)
BYTES = Counter("fiona_exporter_bytes_total", "Bytes delivered", ["destination"])
ATTEMPTS = Counter("fiona_exporter_retries_total", "Deliveries put off after a transient failure")
DURATION = Histogram(
    "fiona_exporter_transfer_seconds",
    "From picking up a request to its result",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
