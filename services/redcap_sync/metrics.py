"""The redcap_sync service's Prometheus metrics (labels carry project names, never identifiers)."""

from prometheus_client import Counter, Gauge

REQUESTS = Counter(
    "fiona_redcap_sync_transfer_requests_total",
    "Transfer requests published, by reason (routing, coupling, autoid, manual, retry, reopened)",
    ["reason"],
)
REFUSED = Counter(
    "fiona_redcap_sync_routes_refused_total", "Routes that did not become requests", ["route"]
)
RESULTS = Counter(
    "fiona_redcap_sync_transfer_results_total", "Exporter results recorded", ["outcome"]
)
UNASSIGNED = Gauge(
    "fiona_redcap_sync_unassigned_studies", "Complete studies no route assigned (recent ones)"
)

# REDCap (only when configured): what was written, what failed, how far behind it is.
REDCAP_WRITES = Counter(
    "fiona_redcap_writes_total",
    "Rows written to REDCap, by kind (study, request, result, autoid, project)",
    ["kind"],
)
REDCAP_FAILURES = Counter(
    "fiona_redcap_failures_total",
    "REDCap calls that failed (work kept and tried again), by what was being done",
    ["what"],
)
REDCAP_PENDING = Gauge(
    "fiona_redcap_pending_writes", "Events not yet written to REDCap (all three queues)"
)
REDCAP_LAST_SYNC = Gauge(
    "fiona_redcap_last_sync_timestamp_seconds",
    "When each kind of pull from REDCap last succeeded (projects, coupling, autoid, requests)",
    ["what"],
)


def start_redcap_metrics() -> None:
    """With REDCap configured: every kind of write and failure counted from zero at start, so
    their series exist (and dashboards show 0) before the first write or failure."""
    for kind in ("study", "request", "result", "autoid", "project"):
        REDCAP_WRITES.labels(kind)
    for what in ("study", "request", "result"):  # the writers (redcap_push)
        REDCAP_FAILURES.labels(what)
    for what in ("projects", "coupling", "autoid", "requests"):  # the pulls (redcap_pull)
        REDCAP_FAILURES.labels(f"pull-{what}")
