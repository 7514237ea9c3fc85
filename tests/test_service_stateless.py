"""Statelessness of the agent service, and local workflow runs through it (FLYTEAGENTS_ENDPOINT)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import interface_pb2, literals_pb2, tasks_pb2, types_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.service import agent_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa
from service_process import ROOT, Service, counter

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


def _report_request(name: str, duration: float) -> agent_pb2.CreateTaskRequest:
    """A CreateTask for examples/custom_agent.py's file-backed report agent."""
    int_type, str_type = types_pb2.LiteralType(simple=types_pb2.INTEGER), types_pb2.LiteralType(simple=types_pb2.STRING)
    template = tasks_pb2.TaskTemplate(
        type="example_report",
        interface=interface_pb2.TypedInterface(
            inputs=interface_pb2.VariableMap(
                variables={"n": interface_pb2.Variable(type=int_type), "word": interface_pb2.Variable(type=str_type)}
            )
        ),
    )
    template.custom.update({"duration": duration})
    inputs = literals_pb2.LiteralMap(
        literals={
            "n": literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=2))),
            "word": sa.string_literal("x"),
        }
    )
    return agent_pb2.CreateTaskRequest(
        template=template, output_prefix="/tmp/out", inputs=inputs, task_execution_metadata=sa.exec_metadata(name)
    )


async def _get(address: str, meta: bytes) -> agent_pb2.Resource:
    async with grpc.aio.insecure_channel(address) as channel:
        request = agent_pb2.GetTaskRequest(
            task_category=agent_pb2.TaskCategory(name="example_report"), resource_meta=meta
        )
        return (await agent_pb2_grpc.AsyncAgentServiceStub(channel).GetTask(request, timeout=10)).resource


async def test_stateless_across_processes_and_restarts(tmp_path):
    jobs = tmp_path / "jobs"
    env = {"FLYTEAGENTS_EXAMPLE_JOBS": str(jobs)}
    a = Service(tmp_path, "custom_agent", cwd=ROOT / "examples", env=env)
    b = Service(tmp_path, "custom_agent", cwd=ROOT / "examples", env=env)
    restarted = None
    try:
        a.ready(), b.ready()  # both started at once
        async with grpc.aio.insecure_channel(a.address) as channel:
            response = await agent_pb2_grpc.AsyncAgentServiceStub(channel).CreateTask(_report_request("state", 60))
        meta = response.resource_meta
        assert (await _get(b.address, meta)).phase == TaskExecution.RUNNING  # polled through the other one

        a.proc.send_signal(signal.SIGKILL)  # killed mid-job
        assert a.proc.wait(10) == -signal.SIGKILL
        restarted = Service(tmp_path, "custom_agent", cwd=ROOT / "examples", env=env).ready()
        assert (await _get(restarted.address, meta)).phase == TaskExecution.RUNNING

        async with grpc.aio.insecure_channel(b.address) as channel:
            await agent_pb2_grpc.AsyncAgentServiceStub(channel).DeleteTask(
                agent_pb2.DeleteTaskRequest(task_type="example_report", resource_meta=meta), timeout=10
            )
        job_id = json.loads(meta)["job_id"]
        assert (jobs / "deletions.log").read_text().split() == [job_id]
        assert (await _get(restarted.address, meta)).phase == TaskExecution.ABORTED
    finally:
        for svc in (a, b, restarted):
            if svc is not None:
                svc.stop()


async def test_local_workflow_runs_through_the_service(tmp_path):
    jobs = tmp_path / "jobs"
    env = {"FLYTEAGENTS_EXAMPLE_JOBS": str(jobs)}
    svc = Service(tmp_path, "custom_agent", cwd=ROOT / "examples", env=env)
    try:
        svc.ready()
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(ROOT / "examples" / "custom_agent.py")],
            env={**os.environ, **env, "FLYTEAGENTS_ENDPOINT": svc.address, "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "count=6 greeting='hello flyte' squares=[0, 1, 4]" in run.stdout
        assert "loud='HELLO FLYTE' length=11" in run.stdout
        # the service, not the workflow's process, ran both agents
        metrics = svc.metrics()
        assert counter(metrics, "example_report", "create") == 1
        assert counter(metrics, "example_report", "get") >= 1
        assert counter(metrics, "example_shout", "do") == 1
    finally:
        svc.stop()
