"""The receiver's Prometheus metrics. Labels come from small fixed sets only."""

from prometheus_client import Counter, Gauge, Histogram

OBJECTS = Counter(
    "fiona_receiver_objects_total",
    "DICOM objects received, by listener, called AE and outcome",
    ["listener", "called_aet", "outcome"],
)
BYTES = Counter(
    "fiona_receiver_bytes_total",
    "Bytes of DICOM objects received",
    ["listener", "called_aet", "outcome"],
)
REFUSED_DISK_RESERVE = Counter(
    "fiona_receiver_refused_disk_reserve_total",
    "C-STOREs answered out of resources unwritten: free space below the disk reserve",
    ["listener"],
)
DUPLICATES = Counter(
    "fiona_receiver_duplicates_total",
    "Objects received again that were already archived",
    ["listener"],
)
QUARANTINED = Counter(
    "fiona_receiver_quarantined_total",
    "Objects put into quarantine, by reason",
    ["reason"],
)
ASSOCIATIONS = Counter(
    "fiona_receiver_associations_total",
    "Association requests, by listener and outcome",
    ["listener", "outcome"],
)
ASSOCIATIONS_ACTIVE = Gauge(
    "fiona_receiver_associations_active",
    "Associations open right now",
    ["listener"],
    multiprocess_mode="livesum",
)
STORE_SECONDS = Histogram(
    "fiona_receiver_store_seconds",
    "Time from a complete C-STORE dataset to its answer",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENT_BACKLOG = Gauge(
    "fiona_receiver_event_backlog",
    "Instance-stored events waiting to be published to NATS",
    multiprocess_mode="livesum",
)
EVENTS_PUBLISHED = Counter(
    "fiona_receiver_events_published_total",
    "Event publish attempts, by outcome",
    ["outcome"],
)
EVENTS_DEFERRED = Counter(
    "fiona_receiver_events_deferred_total",
    "Events not queued because the queue was full; the archive rescan publishes them",
)
INBOX_IMPORTS = Counter(
    "fiona_receiver_inbox_imports_total",
    "Files imported from inbox/, by outcome",
    ["outcome"],
)
RECEIVING_ENABLED = Gauge(
    "fiona_receiver_enabled",
    "1 when config/enabled lets new associations in",
    ["listener"],
    multiprocess_mode="livemax",
)
