"""Log lines that name the task they concern: a context variable and a logging filter."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Mapping
from typing import Any

from .._secrets import current_connection

__all__ = ["TaskLogFilter", "configure_logging", "current_task", "describe_task"]

#: What the running RPC concerns: the request's TaskExecutionMetadata proto, or resource_meta bytes.
#: Kept raw so a call pays for reading and formatting it only when a line is actually logged.
current_task: contextvars.ContextVar[Any] = contextvars.ContextVar("flyteagents_task", default=None)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [task=%(task)s] %(message)s"


def describe_task(value: Any) -> str:
    """A short, secret-free name for what ``current_task`` holds."""
    if value is None:
        return "-"
    if isinstance(value, bytes):
        # resource_meta is small JSON with job identifiers only (never secrets, by contract).
        text = value[:120].decode("utf-8", "replace")
        return f"resource_meta:{text}" + ("..." if len(value) > 120 else "")
    task_id = value.task_execution_id
    ex = task_id.node_execution_id.execution_id
    return f"{ex.project}/{ex.domain}/{ex.name}/{task_id.node_execution_id.node_id}/{task_id.retry_attempt}"


class TaskLogFilter(logging.Filter):
    """Adds ``record.task``: the task execution id (or resource_meta) of the RPC being served.

    In a Flyte 2 call whose Connection carries secrets, their values are masked in the
    message and the traceback, whoever logged them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task"):
            record.task = describe_task(current_task.get())
        connection = current_connection.get()
        if connection is not None and connection.secrets:
            _mask(record, connection.secrets)
        return True


_MASK = "[redacted]"


def _mask(record: logging.LogRecord, secrets: Mapping[str, str]) -> None:
    values = [value for value in secrets.values() if value]
    message = record.getMessage()
    for value in values:
        message = message.replace(value, _MASK)
    record.msg, record.args = message, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        for value in values:
            record.exc_text = record.exc_text.replace(value, _MASK)


def configure_logging(level: str | int = "INFO") -> None:
    """Send logs to stderr, each line naming the task it concerns (for ``flyteagents serve``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(TaskLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
