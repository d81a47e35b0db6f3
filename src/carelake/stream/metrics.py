"""The runtime's Prometheus metrics, created once per process and labelled by service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter("carelake_consumed_total", "Messages consumed", ["service", "topic"])
PRODUCED = Counter("carelake_produced_total", "Messages produced and acknowledged", ["service", "topic"])
DLQ = Counter("carelake_dlq_total", "Messages sent to a DLQ", ["service", "stage", "reason_code"])
SINK_WRITES = Counter("carelake_sink_items_total", "Items written to the service's sink", ["service"])
RETRIES = Counter("carelake_batch_retries_total", "Batches retried after a transient failure", ["service"])
BATCH_SECONDS = Histogram(
    "carelake_batch_seconds",
    "Seconds from a batch's arrival to its commit",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "carelake_batch_messages", "Messages per batch", ["service"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
LAG = Gauge("carelake_consumer_lag", "High watermark minus committed position", ["service", "topic", "partition"])
