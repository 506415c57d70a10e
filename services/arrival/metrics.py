"""The arrival service's Prometheus metrics (no label carries a UID or a patient identifier)."""

from prometheus_client import Counter, Gauge, Histogram

COMPLETIONS = Counter(
    "fiona_arrival_completions_total",
    "Series and studies declared complete, by level and reason",
    ["level", "reason"],
)
REOPENED = Counter(
    "fiona_arrival_reopened_total",
    "Completed series and studies reopened by a late instance",
    ["level"],
)
COMPLETE_DELAY = Histogram(
    "fiona_arrival_complete_delay_seconds",
    "From the last instance received to the completion decision",
    ["level"],
    buckets=(0.5, 1, 2, 3, 5, 10, 15, 20, 30, 60, 120, 300, 900, 3600),
)
IN_FLIGHT = Gauge("fiona_arrival_studies_in_flight", "Studies receiving or waiting to complete")
OLDEST = Gauge(
    "fiona_arrival_oldest_in_flight_seconds", "Age of the oldest study in flight (first instance)"
)
INSTANCES = Counter(
    "fiona_arrival_instances_total", "Instance events handled, by outcome", ["outcome"]
)
CONSUMER_LAG = Gauge("fiona_arrival_consumer_lag", "Instance events not yet handled")
