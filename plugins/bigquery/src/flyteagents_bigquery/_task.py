"""BigQueryTask: a SQL task whose query runs as a BigQuery job on the BigQuery agent."""

from __future__ import annotations

from typing import Any

from flytekit.configuration import SerializationSettings
from flytekit.core.base_sql_task import SQLTask
from flytekit.models import task as task_models
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from flyteagents import AgentNotFoundError, AgentRegistry, AsyncAgentExecutorMixin

from ._agent import RESULTS, TASK_TYPE
from ._config import BigQueryConfig, to_custom
from ._params import bigquery_type_for

__all__ = ["BigQueryTask"]


class BigQueryTask(AsyncAgentExecutorMixin, SQLTask[BigQueryConfig]):
    """A task that runs ``query_template`` as a BigQuery query job.

    Inputs become named query parameters (``@name`` in the query), typed from their
    Python types: int, float, str, bool, datetime (DATETIME), date (DATE), bytes, and
    lists of those. With ``output_structured_dataset_type`` the task outputs
    ``results``, a StructuredDataset at the job's destination table
    (``bq://project:dataset.table``) that the next task can read as a DataFrame.

    Its template is the one flytekitplugins-bigquery makes, so either plugin's agent
    can run it. Run locally, the job runs through BigQueryAgent in this process.

    Example:
        >>> top = BigQueryTask(
        ...     name="top_trips",
        ...     query_template="SELECT * FROM demo.trips WHERE miles > @min_miles",
        ...     task_config=BigQueryConfig(project="my-project", location="US"),
        ...     inputs=kwtypes(min_miles=float),
        ...     output_structured_dataset_type=pd.DataFrame,
        ... )

    Raises:
        TypeError: an input's type cannot be a query parameter.
    """

    _TASK_TYPE = TASK_TYPE

    def __init__(
        self,
        name: str,
        query_template: str,
        task_config: BigQueryConfig,
        inputs: dict[str, type] | None = None,
        output_structured_dataset_type: type | None = None,
        **kwargs: Any,
    ) -> None:
        parameter_types: dict[str, str] = {}
        for input_name, python_type in (inputs or {}).items():
            try:
                bq_type, _ = bigquery_type_for(python_type)
            except TypeError as exc:
                raise TypeError(f"BigQueryTask {name!r} input {input_name!r}: {exc}") from None
            if bq_type == "DATE":  # date and datetime share one Flyte literal type
                parameter_types[input_name] = bq_type
        self._inferred_types = parameter_types
        outputs = {RESULTS: output_structured_dataset_type} if output_structured_dataset_type is not None else None
        super().__init__(
            name=name,
            query_template=query_template,
            task_config=task_config,
            inputs=inputs,
            outputs=outputs,
            task_type=self._TASK_TYPE,
            **kwargs,
        )
        self._output_structured_dataset_type = output_structured_dataset_type

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """The template's custom field (flytekitplugins-bigquery's format plus extensions)."""
        config = self.task_config
        merged = BigQueryConfig(
            project=config.project,
            location=config.location,
            query_job_config=config.query_job_config,
            credentials_secret=config.credentials_secret,
            parameter_types={**self._inferred_types, **config.parameter_types},
        )
        struct = Struct()
        struct.update(to_custom(merged, settings.domain))
        return json_format.MessageToDict(struct)  # type: ignore[no-any-return]

    def get_sql(self, settings: SerializationSettings) -> task_models.Sql:
        """The query, sent to the agent as the template's SQL statement."""
        return task_models.Sql(statement=self.query_template, dialect=task_models.Sql.Dialect.ANSI)

    def execute(self, **kwargs: Any) -> Any:
        """Run the query job through BigQueryAgent (or ``FLYTEAGENTS_ENDPOINT``) and return its outputs."""
        _ensure_agent()
        return super().execute(**kwargs)


def _ensure_agent() -> None:
    """Make the installed BigQuery agent available to local runs of the task."""
    # Typed as Any: mypy cannot follow AgentRegistry's class-or-instance methods here.
    registry: Any = AgentRegistry.default()
    try:
        registry.get_agent(TASK_TYPE)
    except AgentNotFoundError:
        from ._agent import BigQueryAgent

        registry.register(BigQueryAgent())
