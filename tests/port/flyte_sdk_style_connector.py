"""A connector written for flyte-sdk (Flyte 2), the way its plugins are written; tests/test_port_flyte_sdk.py ports it.

It runs a "warehouse query" on an in-memory job table: create submits, get advances the job one
step per poll, delete cancels. It uses what flyte-sdk connectors use: class attributes, the template
as a flyteidl2 message (custom read with json_format), inputs as Python values, the Connection's
secret as a keyword argument, flyteidl2 log links, and get_logs as an async generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flyte.connectors import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta
from flyteidl2.connector.connector_pb2 import GetTaskLogsResponse, GetTaskLogsResponseBody, TaskExecutionMetadata
from flyteidl2.core.execution_pb2 import TaskExecution, TaskLog
from google.protobuf import json_format

JOBS: dict[str, dict[str, Any]] = {}
TASK_TYPE = "warehouse_query_v2"


@dataclass
class WarehouseJob(ResourceMeta):
    job_id: str
    dataset: str


class WarehouseConnector(AsyncConnector[WarehouseJob]):
    name = "Warehouse Connector"
    task_type_name = TASK_TYPE
    metadata_type = WarehouseJob

    async def create(
        self,
        task_template,
        output_prefix: str = "",
        inputs: dict[str, Any] | None = None,
        task_execution_metadata: TaskExecutionMetadata | None = None,
        warehouse_token: str | None = None,
        **kwargs,
    ) -> WarehouseJob:
        if warehouse_token != "tok-v2":
            raise PermissionError("the warehouse refused the token")
        custom = json_format.MessageToDict(task_template.custom)
        execution = task_execution_metadata.task_execution_id.node_execution_id.execution_id.name
        job_id = f"{execution}-{task_template.id.name}"
        job = {"query": custom["query"], "limit": inputs["limit"], "polls": 0, "region": kwargs["region"]}
        JOBS.setdefault(job_id, job)
        return WarehouseJob(job_id=job_id, dataset=custom["dataset"])

    async def get(self, resource_meta: WarehouseJob, warehouse_token: str | None = None, **kwargs) -> Resource:
        job = JOBS[resource_meta.job_id]
        job["polls"] += 1
        link = TaskLog(uri=f"https://warehouse.example/jobs/{resource_meta.job_id}", name="Warehouse", ready=True)
        if job["polls"] < 2:
            return Resource(phase=TaskExecution.RUNNING, message="running", log_links=[link])
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message="done",
            log_links=[link],
            outputs={"rows": job["limit"] * 2, "dataset": resource_meta.dataset},
        )

    async def delete(self, resource_meta: WarehouseJob, **kwargs):
        JOBS[resource_meta.job_id]["cancelled"] = True

    async def get_logs(self, resource_meta: WarehouseJob, token: str = "", **kwargs):
        yield GetTaskLogsResponse(body=GetTaskLogsResponseBody(results=[f"{resource_meta.job_id}: {token or 'start'}"]))


ConnectorRegistry.register(WarehouseConnector())
