"""``flyteagents serve --workers N``: N server processes sharing one port, one metrics endpoint, one drain.

The supervisor (the process the CLI started) loads no agents. It reserves the port, starts N
``flyteagents serve --workers 1`` processes that bind it with SO_REUSEPORT (the kernel spreads
connections over them), forwards SIGTERM and SIGINT to every one (each drains as a single
process does), and serves the metrics endpoint: each scrape reads every worker's own
loopback endpoint and sums the samples, so dashboards see one service, not N.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["WorkerPool", "available_cpus", "cgroup_cpu_limit"]

logger = logging.getLogger("flyteagents.server")

#: What a worker prints once it serves (the same line a single process prints).
_SERVING = re.compile(r"^flyteagents serving on \S+ \(.*?\)(?:, metrics on port (\d+))?")
#: Gauges recomputed from the summed ones rather than summed themselves.
_SATURATION = "flyteagents_sync_workers_saturation"


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), self_cgroup: str | None = None) -> float | None:
    """The CPU limit (in CPUs) the process's cgroups set, the lowest along its path; None without one.

    Reads cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, for
    the cgroup ``/proc/self/cgroup`` names and each of its parents (in a container, the
    container's own cgroup is the root of what it sees).
    """
    if self_cgroup is None:
        try:
            self_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    limits: list[float] = []
    for line in self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            base, files = root, ("cpu.max",)  # type: tuple[Path, tuple[str, ...]]
        elif "cpu" in controllers.split(","):
            base = root / "cpu" if (root / "cpu").is_dir() else root / controllers
            files = ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            limit = _read_limit(base.joinpath(*parts[:depth]), files)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _read_limit(folder: Path, files: tuple[str, ...]) -> float | None:
    try:
        if files == ("cpu.max",):
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((folder / files[0]).read_text())
        period_us = int((folder / files[1]).read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus() -> int:
    """Whole CPUs this process may use: its CPU affinity, capped by its cgroup CPU limit; at least 1.

    A fractional limit rounds down (1.5 CPUs: 1): a second worker there would only share the
    same half CPU's quota with the first and be throttled.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.floor(limit))
    return max(1, cpus)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[str]
    metrics_port: int | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class _SummedMetrics(Collector):
    """The metrics of every live worker, summed sample by sample at each scrape."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        ports = [w.metrics_port for w in self.pool.workers if w.metrics_port is not None and w.proc.poll() is None]
        with ThreadPoolExecutor(max(1, len(ports))) as scrapers:
            texts = list(scrapers.map(_scrape, ports))
        families: dict[str, Metric] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for text in texts:
            if text is None:
                continue
            for family in text_string_to_metric_families(text):
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type)
                    sums[family.name] = {}
                samples = sums[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    samples[key] = samples.get(key, 0.0) + sample.value
        for name, family in families.items():
            if name == _SATURATION:
                continue
            for (sample_name, labels), value in sums[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family
        if _SATURATION in families:
            busy = sum(sums.get("flyteagents_sync_workers_busy", {}).values())
            size = sum(sums.get("flyteagents_sync_workers_max", {}).values())
            yield GaugeMetricFamily(
                _SATURATION,
                families[_SATURATION].documentation,
                value=busy / size if size else 0.0,
            )
        yield GaugeMetricFamily(
            "flyteagents_workers",
            "Worker processes serving (flyteagents serve --workers)",
            value=sum(1 for w in self.pool.workers if w.proc.poll() is None),
        )


def _die_with_parent() -> None:
    """In the worker, before exec: be sent SIGTERM when the supervisor dies (Linux), not live on orphaned."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())
    except OSError as exc:  # a worker exiting mid-scrape: its calls are no longer counted anywhere
        logger.warning("metrics of worker on port %d unreadable: %s", port, exc)
        return None


class WorkerPool:
    """N ``flyteagents serve`` worker processes on one port, supervised.

    Args:
        worker_command: the command line of one worker, given its port (it must serve with
            ``--workers 1 --reuse-port`` and print the "serving on" line).
        workers: how many.
        host: the address the workers serve on.
        port: their port; 0 picks a free one.
        metrics: whether the workers serve metrics (each on a free loopback port) to sum up.
    """

    def __init__(
        self, worker_command: Sequence[str], workers: int, host: str, port: int, metrics: bool, env: dict[str, str]
    ) -> None:
        self.command = list(worker_command)
        self.count = workers
        self.host = host
        self.metrics = metrics
        self.env = env
        self.workers: list[_Worker] = []
        # Held (bound, never listening) until the workers listen: the port is ours, and with
        # --port 0 every worker learns the same one. SO_REUSEPORT lets the workers bind it too.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._reservation = socket.socket(family, socket.SOCK_STREAM)
        self._reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._reservation.bind((host, port))
        self.port: int = self._reservation.getsockname()[1]

    def start(self, stopping: threading.Event, timeout: float = 180.0) -> None:
        """Start the workers and wait until each serves (or a stop is asked); RuntimeError if one exits first."""
        for index in range(self.count):
            env = {**self.env, "FLYTEAGENTS_WORKER": str(index)}
            proc = subprocess.Popen(
                [*self.command, "--port", str(self.port)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
                # forwards it once (two SIGINTs would cut the worker's drain short).
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            worker = _Worker(index, proc)
            self.workers.append(worker)
            threading.Thread(target=self._forward, args=(worker,), daemon=True, name=f"worker-{index}-out").start()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while not worker.ready.wait(0.1):
                if stopping.is_set():
                    return
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker {worker.index} exited with {worker.proc.returncode} before serving")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {worker.index} did not serve within {timeout:.0f}s")
        # Released once every worker listens: a bound socket of another family than the workers'
        # (gRPC binds 0.0.0.0 as a dual-stack [::]) was seen to have connections refused beside them.
        self._reservation.close()

    def _forward(self, worker: _Worker) -> None:
        """Pass a worker's stdout through, keeping back its "serving on" line (the supervisor prints its own)."""
        assert worker.proc.stdout is not None
        for line in worker.proc.stdout:
            match = _SERVING.match(line) if not worker.ready.is_set() else None
            if match is not None:
                worker.metrics_port = int(match.group(1)) if match.group(1) else None
                worker.ready.set()
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    def registry(self) -> CollectorRegistry:
        """A registry whose collection is the sum of the workers' metrics."""
        registry = CollectorRegistry()
        registry.register(_SummedMetrics(self))
        return registry

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every live worker."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signum)

    def wait(self, stopping: threading.Event) -> int:
        """Block until every worker has exited; 0 when all ended cleanly after a stop was asked.

        A worker that exits on its own (a crash) stops the others (they drain) and the pool
        fails: the pod restarts whole rather than serving on with fewer workers than its CPUs.
        """
        failed = False
        while True:
            live = [w for w in self.workers if w.proc.poll() is None]
            if not live:
                break
            for worker in self.workers:
                code = worker.proc.poll()
                if code is not None and not stopping.is_set():
                    logger.error("worker %d exited with %d: stopping the others", worker.index, code)
                    failed = True
                    stopping.set()
                    self.signal_all(signal.SIGTERM)
            time.sleep(0.1)
        codes = [w.proc.returncode for w in self.workers]
        return 1 if failed or any(codes) else 0

    def close(self) -> None:
        """Kill workers still running and release the port."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        self._reservation.close()


def supervise(pool: WorkerPool, metrics_host: str | None, metrics_port: int | None, tls: str) -> int:
    """Run ``pool`` until SIGTERM or SIGINT (each forwarded to every worker) and every worker has ended."""
    from prometheus_client import start_http_server

    stopping = threading.Event()

    def forward(signum: int, frame: object) -> None:
        stopping.set()
        pool.signal_all(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    metrics_server = None
    try:
        pool.start(stopping)
        if stopping.is_set():  # a signal while the workers started: they drain and end, nothing was served
            return pool.wait(stopping)
        note = ""
        if metrics_port is not None and pool.metrics:
            metrics_server, _ = start_http_server(
                metrics_port, addr=metrics_host or pool.host, registry=pool.registry()
            )
            note = f", metrics on port {metrics_server.server_port}"
        print(f"flyteagents serving on {pool.host}:{pool.port} ({tls}){note}, {pool.count} workers", flush=True)
        logger.info("serving on %s:%s with %d worker processes", pool.host, pool.port, pool.count)
        return pool.wait(stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if metrics_server is not None:
            metrics_server.shutdown()
        pool.close()
