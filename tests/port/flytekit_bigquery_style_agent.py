# An async agent written against flytekit's agent framework, in the shape of the example in
# flytekit's "Developing agents" documentation (a BigQuery-like agent plus its SQL task).
# tests/test_port.py runs it under flytekit as is, then under flyteagents with only the
# import lines changed.
from dataclasses import dataclass
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import kwtypes, workflow
from flytekit.configuration import SerializationSettings
from flytekit.extend import SQLTask
from flytekit.extend.backend.base_agent import (
    AgentRegistry,
    AsyncAgentBase,
    AsyncAgentExecutorMixin,
    Resource,
    ResourceMeta,
)
from flytekit.models.literals import LiteralMap
from flytekit.models.task import Sql, TaskTemplate

JOBS: dict[str, dict] = {}


def submit_job(query: str, inputs: LiteralMap) -> str:
    job_id = f"job-{len(JOBS)}"
    limit = inputs.literals["limit"].scalar.primitive.integer
    JOBS[job_id] = {"polls": 0, "rows": list(range(limit)), "query": query}
    return job_id


def get_job_status(job_id: str) -> tuple[int, dict | None]:
    job = JOBS[job_id]
    job["polls"] += 1
    if job["polls"] < 2:
        return TaskExecution.RUNNING, None
    return TaskExecution.SUCCEEDED, {"total": sum(job["rows"]), "query": job["query"]}


def cancel_job(job_id: str) -> None:
    JOBS[job_id]["cancelled"] = True


@dataclass
class WarehouseConfig:
    project: str


@dataclass
class WarehouseMetadata(ResourceMeta):
    job_id: str


class WarehouseAgent(AsyncAgentBase):
    name = "Warehouse Agent"

    def __init__(self):
        super().__init__(task_type_name="warehouse_query", metadata_type=WarehouseMetadata)

    def create(
        self,
        task_template: TaskTemplate,
        inputs: LiteralMap | None = None,
        **kwargs,
    ) -> WarehouseMetadata:
        job_id = submit_job(task_template.sql.statement, inputs)
        return WarehouseMetadata(job_id=job_id)

    def get(self, resource_meta: WarehouseMetadata, **kwargs) -> Resource:
        phase, outputs = get_job_status(resource_meta.job_id)
        return Resource(phase=phase, outputs=outputs)

    def delete(self, resource_meta: WarehouseMetadata, **kwargs):
        cancel_job(resource_meta.job_id)


AgentRegistry.register(WarehouseAgent())


class WarehouseTask(AsyncAgentExecutorMixin, SQLTask[WarehouseConfig]):
    _TASK_TYPE = "warehouse_query"

    def __init__(
        self,
        name: str,
        query_template: str,
        task_config: WarehouseConfig,
        inputs: dict[str, type] | None = None,
        **kwargs,
    ):
        super().__init__(
            name=name,
            query_template=query_template,
            task_config=task_config,
            inputs=inputs,
            outputs=kwtypes(total=int, query=str),
            task_type=self._TASK_TYPE,
            **kwargs,
        )

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        return {"project": self.task_config.project}

    def get_sql(self, settings: SerializationSettings) -> Sql | None:
        return Sql(statement=self.query_template, dialect=Sql.Dialect.ANSI)


query = WarehouseTask(
    name="warehouse_query",
    query_template="SELECT * FROM numbers LIMIT {{ .inputs.limit }}",
    task_config=WarehouseConfig(project="flyte"),
    inputs=kwtypes(limit=int),
)


@workflow
def wf(limit: int = 3) -> tuple[int, str]:
    return query(limit=limit)
