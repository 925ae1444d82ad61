"""Prometheus metrics of one serving process (its own registry: no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServingMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServingMetrics:
    """Request counts, latency, errors by type, batch sizes, feature lookup latency, missing features."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("loopml_requests", "Requests served", ["endpoint", "model_version", "status"], registry=r)
        self.latency = Histogram("loopml_request_latency_seconds", "Request latency", ["endpoint", "model_version"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("loopml_errors", "Errors by type", ["type"], registry=r)
        self.batch_size = Histogram("loopml_batch_size", "Rows scored per model call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.lookup = Histogram("loopml_feature_lookup_seconds", "Online feature lookup latency per row",
                                buckets=_LATENCY_BUCKETS, registry=r)
        self.missing = Counter("loopml_missing_features", "Served feature values that were missing", ["feature"],
                               registry=r)
        self.model_version = Gauge("loopml_model_version", "Model version being served", registry=r)
