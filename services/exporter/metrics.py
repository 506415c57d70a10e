"""The exporter's Prometheus metrics (labels carry project names, never identifiers)."""

from prometheus_client import Counter, Gauge, Histogram

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
COMPLETE_TO_DELIVERED = Histogram(
    "fiona_exporter_complete_to_delivered_seconds",
    "From the study's completion (arrival) to its delivery",
    buckets=(5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
STORE_SECONDS = Histogram(
    "fiona_exporter_store_seconds",
    "One C-STORE at a destination (its latency)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STAGING_BYTES = Gauge("fiona_exporter_staging_bytes", "De-identified copies waiting for delivery")
SFTP_BYTES = Counter(
    "fiona_exporter_sftp_bytes_total", "Bytes written to SFTP servers (writes again included)"
)
SFTP_UPLOADS = Counter(
    "fiona_exporter_sftp_uploads_total",
    "Study packages to SFTP servers: confirmed, already_there (confirmed, nothing written) or"
    " failed",
    ["outcome"],
)
SFTP_RETRIES = Counter(
    "fiona_exporter_sftp_retries_total",
    "SFTP writes again: resume (a partial upload continued), mismatch (written again after a"
    " confirmation failure), failure (a package tried again after a transient failure)",
    ["reason"],
)
SFTP_CONFIRMATION_FAILURES = Counter(
    "fiona_exporter_sftp_confirmation_failures_total",
    "Uploads whose size or checksum on the server differed from the package's",
)

# Every label value from the start, so the SFTP panels show zeros rather than nothing before the
# first upload (as the unlabelled SFTP counters above do).
for _outcome in ("confirmed", "already_there", "failed"):
    SFTP_UPLOADS.labels(_outcome)
for _reason in ("resume", "mismatch", "failure"):
    SFTP_RETRIES.labels(_reason)
