"""Prometheus metrics of the agent service: requests, latency, in-flight calls, sync pool use."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .._runner import AgentRunner

__all__ = ["BUCKETS", "ServiceMetrics"]

#: Latency histogram bucket bounds, in seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
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
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "flyteagents_requests_in_flight", "Agent RPCs being answered now", ["operation"], registry=self.registry
        )
        busy = Gauge(
            "flyteagents_sync_workers_busy", "Plain-function agent calls running or queued", registry=self.registry
        )
        busy.set_function(lambda: runner.busy_workers)
        size = Gauge("flyteagents_sync_workers_max", "Size of the sync worker pool", registry=self.registry)
        size.set_function(lambda: runner.max_workers)
        saturation = Gauge(
            "flyteagents_sync_workers_saturation",
            "Busy sync workers over the pool size (above 1 means calls are queueing)",
            registry=self.registry,
        )
        saturation.set_function(lambda: runner.busy_workers / runner.max_workers if runner.max_workers else 0.0)

    def observe(self, task_type: str, operation: str, code: str, seconds: float) -> None:
        """Count one finished RPC and record its latency."""
        self.requests.labels(task_type, operation, code).inc()
        self.latency.labels(task_type, operation).observe(seconds)

    def in_flight_total(self) -> int:
        """How many RPCs are being answered now, over all operations."""
        return int(sum(sample.value for metric in self.in_flight.collect() for sample in metric.samples))
