"""Three `flyteagents serve` replicas behind one round_robin channel, one killed mid-run: no task is lost.

The service keeps no state of its own (a job lives in the external system, its identity in
resource_meta), so any replica can answer any poll. This drives 100 tasks the way propeller
does, retrying a failed call, while one replica is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.service import agent_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa
from service_process import Service

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

TASKS = 100
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


async def with_retries(call, attempts: int = 20):
    """Propeller's way with a failed call: ask again (CreateTask is idempotent, GetTask a read)."""
    for attempt in range(attempts):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def run_task(stub: agent_pb2_grpc.AsyncAgentServiceStub, i: int, ends_at: float) -> agent_pb2.Resource:
    request = sa.create_request(sa.JOB_TYPE, name=f"exec{i}", outcome=f"until-{ends_at}")
    created = await with_retries(lambda: stub.CreateTask(request, timeout=5))
    poll = agent_pb2.GetTaskRequest(
        task_category=agent_pb2.TaskCategory(name=sa.JOB_TYPE), resource_meta=created.resource_meta
    )
    while True:
        answer = await with_retries(lambda: stub.GetTask(poll, timeout=5))
        if answer.resource.phase != TaskExecution.RUNNING:
            return answer.resource
        await asyncio.sleep(0.1)


async def test_a_replica_killed_mid_run_loses_no_task(tmp_path):
    replicas = [Service(tmp_path, "service_serve_agents") for _ in range(3)]
    try:
        for replica in replicas:
            replica.ready()
        target = "ipv4:" + ",".join(replica.address for replica in replicas)
        options = [("grpc.lb_policy_name", "round_robin")]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            ends_at = time.time() + 2.5
            tasks = [asyncio.ensure_future(run_task(stub, i, ends_at)) for i in range(TASKS)]
            await asyncio.sleep(1.0)  # every task created and polled on all three replicas by now
            replicas[1].proc.send_signal(signal.SIGKILL)
            resources = await asyncio.gather(*tasks)
        assert replicas[1].proc.wait(5) == -signal.SIGKILL
        assert all(replica.proc.poll() is None for replica in (replicas[0], replicas[2]))
    finally:
        for replica in replicas:
            replica.stop()
    for i, resource in enumerate(resources):
        assert resource.phase == TaskExecution.SUCCEEDED, resource.message
        assert resource.outputs.literals["job"].scalar.primitive.string_value == f"exec{i}-0"
        assert resource.outputs.literals["rows"].scalar.primitive.integer == 3
