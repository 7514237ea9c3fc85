"""``flyteagents serve --workers N``: worker processes on one port, summed metrics, one drain, CPU-limit default."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flyteagents.server._workers import available_cpus, cgroup_cpu_limit

sys.path.insert(0, str(Path(__file__).parent))
from service_process import Service, counter
from service_worker_agents import PID_TYPE

pytestmark = pytest.mark.slow

GET_PID = agent_pb2.GetTaskRequest(task_category=agent_pb2.TaskCategory(name=PID_TYPE), resource_meta=b"{}")


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _answering_pids(address: str, connections: int) -> list[int]:
    """The pid that answered a GetTask on each of ``connections`` new connections."""
    pids = []
    for _ in range(connections):
        with grpc.insecure_channel(address) as channel:
            answer = agent_pb2_grpc.AsyncAgentServiceStub(channel).GetTask(GET_PID, timeout=10)
            pids.append(int(answer.resource.message))
    return pids


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(check.status)


def _gauge(metrics_text: str, name: str) -> float:
    match = re.search(rf"^{name} ([\d.e+]+)$", metrics_text, re.MULTILINE)
    assert match, metrics_text
    return float(match[1])


def test_two_workers_share_the_port_sum_their_metrics_and_drain_together(tmp_path: Path) -> None:
    svc = Service(
        tmp_path,
        "service_worker_agents",
        args=("--workers", "2", "--grace-period", "3"),
    ).ready()
    try:
        assert "2 workers" in svc.stdout[-1]
        pids = _answering_pids(svc.address, 40)
        # Both workers answer (the kernel spreads connections over the port's listeners),
        # and they are the supervisor's children, not the supervisor itself.
        assert len(set(pids)) == 2, pids
        assert {_ppid(pid) for pid in set(pids)} == {svc.proc.pid}
        text = svc.metrics()
        # One endpoint, every worker's calls: the exact total, not one worker's share.
        assert counter(text, PID_TYPE, "get") == 40
        assert _gauge(text, "flyteagents_workers") == 2
        assert _gauge(text, "flyteagents_sync_workers_max") > 0
        histogram_count = re.search(
            rf'flyteagents_request_duration_seconds_count\{{operation="get",task_type="{PID_TYPE}"\}} ([\d.e+]+)', text
        )
        assert histogram_count and float(histogram_count[1]) == 40

        svc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # Draining: every worker says NOT_SERVING and still answers calls.
        statuses = {_health(svc.address) for _ in range(12)}
        assert statuses == {health_pb2.HealthCheckResponse.NOT_SERVING}
        assert len(set(_answering_pids(svc.address, 12))) >= 1
        assert svc.proc.wait(30) == 0
        for pid in set(pids):
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        svc.stop()


def test_a_worker_that_dies_stops_the_pool(tmp_path: Path) -> None:
    svc = Service(tmp_path, "service_worker_agents", args=("--workers", "2", "--grace-period", "1")).ready()
    try:
        pids = set(_answering_pids(svc.address, 30))
        assert len(pids) == 2
        victim = min(pids)
        import os

        os.kill(victim, signal.SIGKILL)
        assert svc.proc.wait(30) == 1
        assert "worker" in svc.log() and "exited" in svc.log()
    finally:
        svc.stop()


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = Service(tmp_path, "service_worker_agents", args=("--workers", "2"), port=port)
        try:
            assert svc.proc.wait(60) != 0
            assert f"cannot listen on gRPC port {port} on 127.0.0.1 (--port)" in svc.log()
        finally:
            svc.stop()


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_limit_is_the_lowest_along_the_path(tmp_path: Path) -> None:
    root = _cgroup(
        tmp_path, {"cpu.max": "max 100000\n", "pod/cpu.max": "300000 100000\n", "pod/c/cpu.max": "max 100000\n"}
    )
    assert cgroup_cpu_limit(root, "0::/pod/c\n") == 3.0
    assert cgroup_cpu_limit(root, "0::/\n") is None
    root2 = _cgroup(tmp_path / "half", {"cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(root2, "0::/\n") == 1.5


def test_cgroup_v1_quota_over_period(tmp_path: Path) -> None:
    root = _cgroup(
        tmp_path, {"cpu/kube/cpu.cfs_quota_us": "250000\n", "cpu/kube/cpu.cfs_period_us": "100000\n",
                   "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    )  # fmt: skip
    assert cgroup_cpu_limit(root, "4:memory:/kube\n2:cpu,cpuacct:/kube\n") == 2.5
    assert cgroup_cpu_limit(root, "2:cpu,cpuacct:/\n") is None
    assert cgroup_cpu_limit(root, "") is None


def test_available_cpus_is_whole_and_within_the_affinity() -> None:
    cpus = available_cpus()
    assert 1 <= cpus <= len(__import__("os").sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    if limit is not None:
        assert cpus <= max(1, int(limit))


def test_workers_option_documents_its_default() -> None:
    from click.testing import CliRunner

    from flyteagents.cli._main import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--workers" in result.output and "cgroup CPU limit" in " ".join(result.output.split())
    assert "--reuse-port" not in result.output  # set by the supervisor for its workers only
