"""An agent that tells which process answered (``flyteagents serve --workers N --modules service_worker_agents``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents import AgentRegistry, AsyncAgentBase, Resource, ResourceMeta

PID_TYPE = "worker_pid"


@dataclass
class NoMeta(ResourceMeta):
    """No job: GetTask answers at once."""


class PidAgent(AsyncAgentBase):
    """GetTask answers RUNNING with the answering process's pid as its message."""

    name = "Worker Pid Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name=PID_TYPE, metadata_type=NoMeta)

    async def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kw: Any) -> NoMeta:
        return NoMeta()

    async def get(self, resource_meta: NoMeta, **kw: Any) -> Resource:
        return Resource(phase=TaskExecution.RUNNING, message=str(os.getpid()))

    async def delete(self, resource_meta: NoMeta, **kw: Any) -> None:
        return None


AgentRegistry.register(PidAgent(), override=True)
