"""Prometheus metrics of the agent service: requests, latency, in-flight calls, sync pool use.

A finished call appends one tuple to a list on the event loop thread (no lock, no lookup);
the tuples are folded into counts a few hundred at a time, and the Prometheus families are
built from the counts only when the metrics endpoint is scraped.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from itertools import islice

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .._runner import AgentRunner

__all__ = ["BUCKETS", "ServiceMetrics"]

#: Latency histogram bucket bounds, in seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Calls observed before they are folded into the counts: folding a batch at once keeps its code
# and data in cache, where one call's worth, between two gRPC calls, would find them cold.
_FOLD_EVERY = 256


class ServiceMetrics(Collector):
    """The service's metrics, registered in their own CollectorRegistry (one per server).

    Exposed families:
        ``flyteagents_requests_total{task_type, operation, code}``,
        ``flyteagents_request_duration_seconds{task_type, operation}`` (histogram),
        ``flyteagents_requests_in_flight{operation}``,
        ``flyteagents_sync_workers_busy``, ``flyteagents_sync_workers_max``,
        ``flyteagents_sync_workers_saturation`` (busy / max; above 1 means calls queue).

    Args:
        runner: the AgentRunner whose thread pool use is reported.
        registry: where to register; a new CollectorRegistry when None.
    """

    def __init__(self, runner: AgentRunner, registry: CollectorRegistry | None = None) -> None:
        self.runner = runner
        # (task_type, operation, code) -> per-bucket counts (the last one is +Inf), then the sum of
        # the latencies, folded from _observed in batches; the families are summed up at scrape time.
        self._calls: dict[tuple[str, str, str], list[float]] = {}
        self._observed: list[tuple[str, str, str, float]] = []  # (task_type, operation, code, seconds)
        self._fold_lock = threading.Lock()  # the event loop and the scrape thread both fold
        self._in_flight: dict[str, list[int]] = {}
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self)

    def in_flight_counter(self, operation: str) -> list[int]:
        """A one-item list holding the number of ``operation`` calls in flight (callers add and subtract)."""
        counter = self._in_flight.get(operation)
        if counter is None:
            counter = self._in_flight[operation] = [0]
        return counter

    def observe(self, task_type: str, operation: str, code: str, seconds: float) -> None:
        """Count one finished RPC and record its latency."""
        observed = self._observed
        observed.append((task_type, operation, code, seconds))
        if len(observed) >= _FOLD_EVERY:
            self._fold(wait=False)  # the event loop never waits: a scrape folding now takes these too

    def _fold(self, wait: bool) -> None:
        """Move the calls observed so far into the per-label bucket counts."""
        if not self._fold_lock.acquire(blocking=wait):
            return
        try:
            observed, calls = self._observed, self._calls
            count = len(observed)  # calls appended from here on stay for the next fold
            for task_type, operation, code, seconds in islice(observed, count):
                key = (task_type, operation, code)
                values = calls.get(key)
                if values is None:
                    values = calls[key] = [0.0] * (len(BUCKETS) + 2)
                values[bisect_left(BUCKETS, seconds)] += 1
                values[-1] += seconds
            del observed[:count]
        finally:
            self._fold_lock.release()

    def collect(self) -> Iterator[Metric]:
        """Build the metric families (called by the Prometheus registry at scrape time)."""
        self._fold(wait=True)
        requests = CounterMetricFamily(
            "flyteagents_requests",
            "Agent RPCs by task type, operation and gRPC status code",
            labels=["task_type", "operation", "code"],
        )
        by_operation: dict[tuple[str, str], list[float]] = {}
        for (task_type, operation, code), values in list(self._calls.items()):
            requests.add_metric([task_type, operation, code], sum(values[:-1]))
            merged = by_operation.setdefault((task_type, operation), [0.0] * len(values))
            for i, value in enumerate(values):
                merged[i] += value
        yield requests
        latency = HistogramMetricFamily(
            "flyteagents_request_duration_seconds",
            "Time spent answering agent RPCs",
            labels=["task_type", "operation"],
        )
        for labels, values in by_operation.items():
            counts = values[:-1]
            cumulative: list[tuple[str, float]] = []
            total = 0.0
            for bound, in_bucket in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                total += in_bucket
                cumulative.append((bound, total))
            latency.add_metric(list(labels), cumulative, sum_value=values[-1])
        yield latency
        in_flight = GaugeMetricFamily(
            "flyteagents_requests_in_flight", "Agent RPCs being answered now", labels=["operation"]
        )
        for operation, counter in list(self._in_flight.items()):
            in_flight.add_metric([operation], counter[0])
        yield in_flight
        busy, size = self.runner.busy_workers, self.runner.max_workers
        yield GaugeMetricFamily(
            "flyteagents_sync_workers_busy", "Plain-function agent calls running or queued", value=busy
        )
        yield GaugeMetricFamily("flyteagents_sync_workers_max", "Size of the sync worker pool", value=size)
        yield GaugeMetricFamily(
            "flyteagents_sync_workers_saturation",
            "Busy sync workers over the pool size (above 1 means calls are queueing)",
            value=busy / size if size else 0.0,
        )
