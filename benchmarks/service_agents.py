"""The trivial agents benchmarks/service.py serves, written for flyteagents and for flytekit.

``flyteagents serve --modules service_agents``, ``pyflyte serve connector --modules
service_agents`` and flyte-sdk's ``c0 --modules service_agents`` import this module (from the
benchmarks directory); each registers only the agents of the framework it is served by, chosen
by BENCH_FRAMEWORK (flyte-sdk has no sync connectors: only the async one there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution

ASYNC_TYPE = "bench_async"
SYNC_TYPE = "bench_echo"
#: a sync agent answering with Python-valued outputs, ``{"o0": "pong"}``
PONG_TYPE = "bench_pong"
#: an async agent whose get answers SUCCEEDED with Python-valued outputs (flytekit's side of the
#: GetTask-with-outputs comparison: flyteagents answers it with a sensor, _found_sensor.FoundSensor)
DONE_TYPE = "bench_done"

if os.environ.get("BENCH_FRAMEWORK") == "flytekit":
    from flytekit.extend.backend.base_connector import (
        AsyncConnectorBase,
        ConnectorRegistry,
        Resource,
        ResourceMeta,
        SyncConnectorBase,
    )

    @dataclass
    class FkMeta(ResourceMeta):
        job_id: str

    class FkAsync(AsyncConnectorBase):
        name = "Bench Async"

        def __init__(self) -> None:
            super().__init__(task_type_name=ASYNC_TYPE, metadata_type=FkMeta)

        async def create(self, task_template, inputs=None, **kwargs: Any) -> FkMeta:
            return FkMeta(job_id="job-1")

        async def get(self, resource_meta: FkMeta, **kwargs: Any) -> Resource:
            return Resource(phase=TaskExecution.RUNNING)

        async def delete(self, resource_meta: FkMeta, **kwargs: Any) -> None:
            return None

    class FkEcho(SyncConnectorBase):
        name = "Bench Echo"

        def __init__(self) -> None:
            super().__init__(task_type_name=SYNC_TYPE)

        async def do(self, task_template, output_prefix, inputs=None, **kwargs: Any) -> Resource:
            return Resource(phase=TaskExecution.SUCCEEDED, outputs=inputs)

    class FkPong(SyncConnectorBase):
        name = "Bench Pong"

        def __init__(self) -> None:
            super().__init__(task_type_name=PONG_TYPE)

        async def do(self, task_template, output_prefix, inputs=None, **kwargs: Any) -> Resource:
            return Resource(phase=TaskExecution.SUCCEEDED, outputs={"o0": "pong"})

    class FkDone(AsyncConnectorBase):
        name = "Bench Done"

        def __init__(self) -> None:
            super().__init__(task_type_name=DONE_TYPE, metadata_type=FkMeta)

        async def create(self, task_template, inputs=None, **kwargs: Any) -> FkMeta:
            return FkMeta(job_id="job-1")

        async def get(self, resource_meta: FkMeta, **kwargs: Any) -> Resource:
            return Resource(phase=TaskExecution.SUCCEEDED, outputs={"path": "/data/in.csv", "size": 3, "ready": True})

        async def delete(self, resource_meta: FkMeta, **kwargs: Any) -> None:
            return None

    ConnectorRegistry.register(FkAsync())
    ConnectorRegistry.register(FkDone())
    ConnectorRegistry.register(FkEcho())
    ConnectorRegistry.register(FkPong())
elif os.environ.get("BENCH_FRAMEWORK") == "flyte":
    from flyte.connectors import AsyncConnector
    from flyte.connectors import ConnectorRegistry as FlyteRegistry
    from flyte.connectors import Resource as FlyteResource
    from flyte.connectors import ResourceMeta as FlyteMeta

    @dataclass
    class C0Meta(FlyteMeta):
        job_id: str

    class C0Async(AsyncConnector):
        name = "Bench Async"
        task_type_name = ASYNC_TYPE
        metadata_type = C0Meta

        async def create(self, task_template, output_prefix="", inputs=None, **kwargs: Any) -> C0Meta:
            return C0Meta(job_id="job-1")

        async def get(self, resource_meta: C0Meta, **kwargs: Any) -> FlyteResource:
            return FlyteResource(phase=TaskExecution.RUNNING)

        async def delete(self, resource_meta: C0Meta, **kwargs: Any) -> None:
            return None

    FlyteRegistry.register(C0Async())
else:
    import flyteagents as fa

    @dataclass
    class FaMeta(fa.ResourceMeta):
        job_id: str

    class FaAsync(fa.AsyncAgentBase):
        name = "Bench Async"

        def __init__(self) -> None:
            super().__init__(task_type_name=ASYNC_TYPE, metadata_type=FaMeta)

        async def create(self, task_template, output_prefix, inputs=None, **kwargs: Any) -> FaMeta:
            return FaMeta(job_id="job-1")

        async def get(self, resource_meta: FaMeta, **kwargs: Any) -> fa.Resource:
            return fa.Resource(phase=TaskExecution.RUNNING)

        async def delete(self, resource_meta: FaMeta, **kwargs: Any) -> None:
            return None

    class FaEcho(fa.SyncAgentBase):
        name = "Bench Echo"

        def __init__(self) -> None:
            super().__init__(task_type_name=SYNC_TYPE)

        async def do(self, task_template, output_prefix, inputs=None, **kwargs: Any) -> fa.Resource:
            return fa.Resource(phase=TaskExecution.SUCCEEDED, outputs=inputs)

    class FaPong(fa.SyncAgentBase):
        name = "Bench Pong"

        def __init__(self) -> None:
            super().__init__(task_type_name=PONG_TYPE)

        async def do(self, task_template, output_prefix, inputs=None, **kwargs: Any) -> fa.Resource:
            return fa.Resource(phase=TaskExecution.SUCCEEDED, outputs={"o0": "pong"})

    fa.AgentRegistry.register(FaAsync(), override=True)
    fa.AgentRegistry.register(FaEcho(), override=True)
    fa.AgentRegistry.register(FaPong(), override=True)
