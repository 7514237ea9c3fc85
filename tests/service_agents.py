"""Agents the service tests serve, in-process and through ``flyteagents serve --modules service_agents``."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flyteidl.admin.agent_pb2 import GetTaskMetricsResponse
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.core.metrics_pb2 import ExecutionMetricResult

from flyteagents import (
    AgentRegistry,
    AgentTimeoutError,
    AsyncAgentBase,
    ExternalServiceError,
    InvalidTaskError,
    Resource,
    ResourceMeta,
    RetryableTaskFailedError,
    SyncAgentBase,
    TaskFailedError,
)

JOB_TYPE = "svc_job"
ECHO_TYPE = "svc_echo"
PLAIN_TYPE = "svc_plain"
SLOW_TYPE = "svc_slow"


@dataclass
class JobMeta(ResourceMeta):
    job_id: str
    outcome: str = "ok"


def _str_input(inputs: Any, name: str, default: str = "") -> str:
    if inputs is None or name not in inputs.literals:
        return default
    scalar = inputs.literals[name].scalar  # a template without an interface lets any literal through
    primitive = scalar.primitive if scalar is not None else None
    return (primitive.string_value if primitive is not None else None) or default


def _raise_for(outcome: str) -> None:
    if outcome == "timeout":
        raise AgentTimeoutError("the job API did not answer within 5s")
    if outcome == "unavailable":
        raise ExternalServiceError("the job API answered 503")
    if outcome == "invalid":
        raise InvalidTaskError("the query is empty")
    if outcome == "boom":
        raise RuntimeError("secret-token-123 leaked in a bug")
    # what a misbehaving agent may raise that is not an Exception
    if outcome == "exit":
        raise SystemExit(3)
    if outcome == "interrupt":
        raise KeyboardInterrupt
    if outcome == "cancelled":
        raise asyncio.CancelledError()
    if outcome == "generator-exit":
        raise GeneratorExit


class JobAgent(AsyncAgentBase):
    """An async agent whose job outcome is chosen by its ``outcome`` input; stateless."""

    name = "Service Test Job Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name=JOB_TYPE, metadata_type=JobMeta)
        self.created: list[Any] = []

    async def create(self, task_template, output_prefix, inputs=None, task_execution_metadata=None, **kw):
        outcome = _str_input(inputs, "outcome", "ok")
        if outcome.startswith("create-"):
            _raise_for(outcome.removeprefix("create-"))
        self.created.append(task_execution_metadata)
        tid = task_execution_metadata.task_execution_id if task_execution_metadata else None
        job_id = f"{tid.node_execution_id.execution_id.name}-{tid.retry_attempt}" if tid else "anon"
        return JobMeta(job_id=job_id, outcome=outcome)

    async def get(self, resource_meta: JobMeta, **kw) -> Resource:
        outcome = resource_meta.outcome
        _raise_for(outcome)
        if outcome == "running":
            return Resource(phase=TaskExecution.RUNNING, message="still running", custom_info={"step": 3})
        if outcome.startswith("until-") and time.time() < float(outcome.removeprefix("until-")):
            return Resource(phase=TaskExecution.RUNNING, message="running until its end time")
        if outcome == "fail":
            return Resource(phase=TaskExecution.FAILED, message="the query had a syntax error")
        if outcome == "raise-fail":
            raise TaskFailedError("the job was rejected")
        if outcome == "retry":
            raise RetryableTaskFailedError("the cluster was preempted")
        if outcome == "file":  # outputs flytekit stores as files: a FlyteFile and a pickled set
            from flytekit.types.file import FlyteFile

            path = Path(tempfile.mkdtemp()) / "report.txt"
            path.write_text(f"report of {resource_meta.job_id}")
            return Resource(phase=TaskExecution.SUCCEEDED, outputs={"report": FlyteFile(str(path)), "tags": {"x", "y"}})
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message="done",
            outputs={"rows": 3, "names": ["a", "b"], "scores": {"a": 1.5}, "job": resource_meta.job_id},
        )

    async def delete(self, resource_meta: JobMeta, **kw) -> None:
        _raise_for(resource_meta.outcome)

    async def get_metrics(self, resource_meta: JobMeta, **kw) -> GetTaskMetricsResponse:
        return GetTaskMetricsResponse(results=[ExecutionMetricResult(metric=q) for q in kw.get("queries", [])])

    async def get_logs(self, resource_meta: JobMeta, **kw):
        for i in range(3):
            await asyncio.sleep(0)
            yield [f"{resource_meta.job_id} line {i}a", f"{resource_meta.job_id} line {i}b"]


class PlainAgent(AsyncAgentBase):
    """An async agent written with plain functions (run on the sync worker pool); no logs or metrics."""

    name = "Service Test Plain Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name=PLAIN_TYPE, metadata_type=JobMeta)

    def create(self, task_template, output_prefix, inputs=None, **kw):
        return JobMeta(job_id="plain")

    def get(self, resource_meta: JobMeta, **kw) -> Resource:
        outcome = resource_meta.outcome
        _raise_for(outcome)
        time.sleep(float(outcome.removeprefix("sleep-")) if outcome.startswith("sleep-") else 0.001)
        return Resource(phase=TaskExecution.RUNNING)

    def delete(self, resource_meta: JobMeta, **kw) -> None:
        return None

    def get_logs(self, resource_meta: JobMeta, **kw):
        yield "first"
        yield "second"


class SlowAgent(AsyncAgentBase):
    """An async agent whose create takes the task's ``custom["sleep"]`` seconds."""

    name = "Service Test Slow Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name=SLOW_TYPE, metadata_type=JobMeta)

    async def create(self, task_template, output_prefix, inputs=None, **kw):
        await asyncio.sleep(float(task_template.custom.get("sleep", 1.0)))
        return JobMeta(job_id="slow")

    async def get(self, resource_meta: JobMeta, **kw) -> Resource:
        return Resource(phase=TaskExecution.SUCCEEDED)

    async def delete(self, resource_meta: JobMeta, **kw) -> None:
        return None


class EchoAgent(SyncAgentBase):
    """A sync agent answering its ``text`` input upper-cased, or the failure ``text`` names."""

    name = "Service Test Echo Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name=ECHO_TYPE)

    async def do(self, task_template, output_prefix, inputs=None, **kw) -> Resource:
        text = _str_input(inputs, "text")
        _raise_for(text)
        if text == "fail":
            raise TaskFailedError("the model refused")
        if text == "retry":
            raise RetryableTaskFailedError("rate limited")
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            outputs={"loud": text.upper(), "sizes": [len(text)], "empty": []},
        )


def make_registry() -> AgentRegistry:
    """A fresh registry holding every test agent."""
    registry = AgentRegistry()
    for agent in (JobAgent(), PlainAgent(), SlowAgent(), EchoAgent()):
        registry.register(agent)
    return registry


# Requests as FlytePropeller builds them.


def string_literal(value: str) -> Any:
    from flyteidl.core import literals_pb2

    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value=value)))


def string_inputs(**values: str) -> Any:
    from flyteidl.core import literals_pb2

    return literals_pb2.LiteralMap(literals={k: string_literal(v) for k, v in values.items()})


def template(task_type: str, inputs: tuple[str, ...] = (), custom: dict[str, Any] | None = None, version: int = 0):
    """A TaskTemplate proto with string inputs named ``inputs``."""
    from flyteidl.core import identifier_pb2, interface_pb2, tasks_pb2, types_pb2

    string = types_pb2.LiteralType(simple=types_pb2.STRING)
    tpl = tasks_pb2.TaskTemplate(
        id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK, project="p", domain="d", name=f"tests.{task_type}", version="v1"
        ),
        type=task_type,
        task_type_version=version,
        metadata=tasks_pb2.TaskMetadata(runtime=tasks_pb2.RuntimeMetadata(type=tasks_pb2.RuntimeMetadata.FLYTE_SDK)),
        interface=interface_pb2.TypedInterface(
            inputs=interface_pb2.VariableMap(variables={n: interface_pb2.Variable(type=string) for n in inputs})
        ),
    )
    if custom:
        tpl.custom.update(custom)
    return tpl


def exec_metadata(name: str = "exec1", node: str = "n0", retry: int = 0):
    """The TaskExecutionMetadata proto propeller sends for one attempt of one node."""
    from flyteidl.admin import agent_pb2
    from flyteidl.core import identifier_pb2

    return agent_pb2.TaskExecutionMetadata(
        task_execution_id=identifier_pb2.TaskExecutionIdentifier(
            task_id=identifier_pb2.Identifier(
                resource_type=identifier_pb2.TASK, project="p", domain="d", name="t", version="v1"
            ),
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id=node,
                execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name=name),
            ),
            retry_attempt=retry,
        ),
        namespace="p-d",
        k8s_service_account="default",
    )


def create_request(task_type: str, name: str = "exec1", custom: dict[str, Any] | None = None, **inputs: str):
    from flyteidl.admin import agent_pb2

    return agent_pb2.CreateTaskRequest(
        template=template(task_type, tuple(inputs), custom),
        output_prefix="/tmp/flyteagents-tests/out",
        inputs=string_inputs(**inputs),
        task_execution_metadata=exec_metadata(name),
    )


def sync_requests(task_type: str, name: str = "exec1", **inputs: str) -> list[Any]:
    """The two messages propeller writes on ExecuteTaskSync: the header, then the inputs."""
    from flyteidl.admin import agent_pb2

    header = agent_pb2.CreateRequestHeader(
        template=template(task_type, tuple(inputs)),
        output_prefix="/tmp/flyteagents-tests/out",
        task_execution_metadata=exec_metadata(name),
    )
    return [
        agent_pb2.ExecuteTaskSyncRequest(header=header),
        agent_pb2.ExecuteTaskSyncRequest(inputs=string_inputs(**inputs)),
    ]
