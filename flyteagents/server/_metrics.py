"""Prometheus metrics of the agent service: requests, latency, in-flight calls, sync pool use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .._runner import AgentRunner

__all__ = ["ServiceMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _SyncPoolCollector(Collector):
    """Reads the sync worker pool's use at scrape time, so calls pay nothing for it."""

    def __init__(self, runner: AgentRunner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[GaugeMetricFamily]:
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


class ServiceMetrics:
    """The service's metrics, in their own CollectorRegistry (one per server).

    Args:
        runner: the AgentRunner whose thread pool use is reported.
        registry: where to register; a new CollectorRegistry when None.
    """

    def __init__(self, runner: AgentRunner, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "flyteagents_requests",
            "Agent RPCs by task type, operation and gRPC status code",
            ["task_type", "operation", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flyteagents_request_duration_seconds",
            "Time spent answering agent RPCs",
            ["task_type", "operation"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "flyteagents_requests_in_flight",
            "Agent RPCs being answered now",
            ["operation"],
            registry=self.registry,
        )
        self.registry.register(_SyncPoolCollector(runner))
        # labels() validates and locks on every call; the children are cached once per label set.
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}
        self._gauges: dict[str, Any] = {}

    def in_flight_gauge(self, operation: str) -> Any:
        """The in-flight gauge child for ``operation``."""
        gauge = self._gauges.get(operation)
        if gauge is None:
            gauge = self._gauges[operation] = self.in_flight.labels(operation)
        return gauge

    def observe(self, task_type: str, operation: str, code: str, seconds: float) -> None:
        """Count one finished RPC and record its latency."""
        key = (task_type, operation, code)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(task_type, operation, code)
        counter.inc()
        hkey = (task_type, operation)
        histogram = self._histograms.get(hkey)
        if histogram is None:
            histogram = self._histograms[hkey] = self.latency.labels(task_type, operation)
        histogram.observe(seconds)
