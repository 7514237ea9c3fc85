"""flyteagents-databricks: run Flyte tasks as Databricks Jobs API 2.1 runs.

Use ``@task(task_config=Databricks(...))`` for a Python task, or ``DatabricksNotebookTask``
for a notebook; serve them with ``DatabricksAgent`` (entry point ``databricks``), which also
serves templates made by flytekitplugins-spark's ``DatabricksV2``.
"""

from ._agent import DatabricksAgent, DatabricksRunMeta, run_phase
from ._auth import Credentials, resolve_secret
from ._client import DatabricksAPIError, JobsClient, JobsClientPool
from ._settings import DatabricksSettings
from ._spec import build_submit_request, idempotency_token
from ._task import Databricks, DatabricksNotebookTask, DatabricksTask

__all__ = [
    "Credentials",
    "Databricks",
    "DatabricksAPIError",
    "DatabricksAgent",
    "DatabricksNotebookTask",
    "DatabricksRunMeta",
    "DatabricksSettings",
    "DatabricksTask",
    "JobsClient",
    "JobsClientPool",
    "build_submit_request",
    "idempotency_token",
    "resolve_secret",
    "run_phase",
]
