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
