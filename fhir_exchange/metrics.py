"""The server's Prometheus metrics, defined once for every layer (https://prometheus.io/docs/concepts/).

Defined here, at the bottom of the layers, so any module may count what it sees (the notifications
increment :data:`SUBSCRIPTION_DELIVERY_FAILURES`) without importing the HTTP edge; ``/metrics``
(:mod:`fhir_exchange.api.metrics`) exposes them.

Several worker processes: prometheus-client's multiprocess mode. When ``PROMETHEUS_MULTIPROC_DIR``
names an empty, writable folder in the environment of every worker before they start, each process
writes its values to files there and a scrape of any worker adds them up (:func:`exposition`); the
gauges below say how (``multiprocess_mode``). Without it, a process exposes its own values.

Label values are bounded: ``interaction`` is one of the route table's interactions, ``type`` a known
resource type (anything else counts as ``unknown``), ``status`` an HTTP status, ``operation`` a store
method name. Latency histograms carry the interaction only, so their series stay few.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

# Seconds: from a cached read (a millisecond) to a large transaction Bundle (seconds).
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

REQUESTS = Counter("fhir_exchange_requests", "HTTP requests answered, by FHIR interaction, resource type and status",
                   ["interaction", "type", "status"])
REQUEST_SECONDS = Histogram("fhir_exchange_request_duration_seconds",
                            "Time from the request's arrival to its answer, by FHIR interaction",
                            ["interaction"], buckets=_LATENCY)
STORE_SECONDS = Histogram("fhir_exchange_store_duration_seconds",
                          "Time of one store call (a transaction: from its start to its commit), by operation",
                          ["operation"], buckets=_FAST)
VALIDATION_SECONDS = Histogram("fhir_exchange_validation_duration_seconds",
                               "Time to validate one resource (structure, profiles, invariants)", buckets=_FAST)
OPEN_CONSULTS = Gauge("fhir_exchange_open_consults",
                      "Consult Tasks not yet completed, rejected, cancelled or failed (counted in the store on "
                      "each scrape)", multiprocess_mode="mostrecent")
SUBSCRIPTION_DELIVERY_FAILURES = Counter("fhir_exchange_subscription_delivery_failures",
                                         "Notifications and forwarded messages a receiver did not accept "
                                         "(each failed attempt)")
AUDIT_PENDING = Gauge("fhir_exchange_audit_pending",
                      "AuditEvents waiting to be written to the audit store (their requests wait with them)",
                      multiprocess_mode="livesum")
AUDIT_OLDEST_PENDING_SECONDS = Gauge("fhir_exchange_audit_oldest_pending_seconds",
                                     "Age of the oldest AuditEvent waiting to be written (0: none waiting)",
                                     multiprocess_mode="livemax")
AUDIT_SECONDS = Histogram("fhir_exchange_audit_write_duration_seconds",
                          "Time a request waits for its AuditEvent to be durable (group commit)", buckets=_FAST)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> tuple[bytes, str]:
    """The text exposition format of every metric (of every worker in multiprocess mode)."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Drop the live gauges of a worker that ended (a process manager calls this when one exits)."""
    if os.environ.get(MULTIPROCESS_ENV):
        _multiprocess.mark_process_dead(pid)
