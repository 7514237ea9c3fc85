"""Log lines that name the task they concern: a context variable and a logging filter."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from .._models import task_execution_id
from .._secrets import current_connection

__all__ = [
    "EscapingFormatter",
    "LogLimiter",
    "TaskLogFilter",
    "configure_logging",
    "current_task",
    "describe_task",
    "escape_controls",
]

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
    return task_execution_id(value) or "-"


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or f"\\u{ord(char):04x}"


def escape_controls(text: str) -> str:
    """``text`` with line breaks and other control characters written as escapes, so it stays one line."""
    return _CONTROLS.sub(_escaped, text) if _CONTROLS.search(text) else text


class EscapingFormatter(logging.Formatter):
    """A Formatter whose lines cannot be split or forged by what a request carries.

    The message and the task it names come from the network (resource_meta, names, error
    messages), so their control characters are escaped; a traceback keeps its own lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


class LogLimiter:
    """Allows at most ``rate`` log lines per ``period`` seconds, counting the ones it held back.

    Bad requests are the client's business: a client sending thousands must not flood the log.
    """

    def __init__(self, rate: int = 20, period: float = 10.0) -> None:
        self.rate = rate
        self.period = period
        self._window_start = float("-inf")
        self._count = 0
        self.suppressed = 0

    def allow(self) -> tuple[bool, int]:
        """Whether to log this line, and how many lines were held back since the last one logged."""
        now = time.monotonic()
        if now - self._window_start >= self.period:
            self._window_start, self._count = now, 0
        if self._count >= self.rate:
            self.suppressed += 1
            return False, 0
        self._count += 1
        held, self.suppressed = self.suppressed, 0
        return True, held


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
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    handler.addFilter(TaskLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
