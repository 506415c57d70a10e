"""The classifier's Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

OBJECTS_INDEXED = Counter(
    "fiona_classifier_objects_indexed_total", "Instances indexed, by outcome", ["outcome"]
)
SERIES_UPDATED = Counter("fiona_classifier_series_updated_total", "Series summaries changed")
CLASSIFY_SECONDS = Histogram(
    "fiona_classifier_classify_seconds",
    "Time to index and classify one instance (header read included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RULE_ERRORS = Counter(
    "fiona_classifier_rule_file_errors_total", "Rule files refused at start or on reload"
)
CONSUMER_LAG = Gauge(
    "fiona_classifier_consumer_lag", "Instance events not yet handled by the classifiers"
)
