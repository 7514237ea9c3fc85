"""flyteagents-bigquery: BigQuery SQL query jobs as Flyte tasks, run by an async agent.

``BigQueryTask`` defines the task, ``BigQueryAgent`` (task type
``bigquery_query_job_task``) runs it, and the ``bq://`` structured-dataset decoders
let the next task read the result table as a pandas DataFrame or Arrow table.
Importing this package registers the decoders.
"""

from ._agent import TASK_TYPE, BigQueryAgent, BigQueryJob, job_id_for
from ._client import ClientCache
from ._config import BigQueryConfig
from ._decoder import BigQueryToArrowDecoder, BigQueryToPandasDecoder, parse_bq_uri, register_decoders
from ._task import BigQueryTask

__all__ = [
    "TASK_TYPE",
    "BigQueryAgent",
    "BigQueryConfig",
    "BigQueryJob",
    "BigQueryTask",
    "BigQueryToArrowDecoder",
    "BigQueryToPandasDecoder",
    "ClientCache",
    "job_id_for",
    "parse_bq_uri",
    "register_decoders",
]

register_decoders()
