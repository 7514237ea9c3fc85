"""flyteagents-example: ExampleJobAgent runs jobs on a small REST jobs API; ExampleJobTask declares them."""

from ._agent import TASK_TYPE, ExampleJobAgent, JobMeta
from ._task import ExampleJobTask

__all__ = ["TASK_TYPE", "ExampleJobAgent", "ExampleJobTask", "JobMeta"]
