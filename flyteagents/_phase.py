"""Mapping external job states onto Flyte task phases."""

from __future__ import annotations

from typing import TypeAlias

from flyteidl.core.execution_pb2 import TaskExecution

__all__ = ["TERMINAL_PHASES", "is_terminal_phase", "to_phase"]

#: A ``TaskExecution.Phase`` value (an int at run time).
Phase: TypeAlias = int

TERMINAL_PHASES: frozenset[Phase] = frozenset(
    {TaskExecution.SUCCEEDED, TaskExecution.FAILED, TaskExecution.ABORTED, TaskExecution.RETRYABLE_FAILED}
)

# Every state the reference plugins meet, lower-cased, with its platform where it is specific:
# BigQuery job states, Databricks run life-cycle and result states, OpenAI batch statuses,
# plus the generic words most job APIs use. A cancelled job is ABORTED, never FAILED.
_STATES: dict[str, Phase] = {
    # waiting to start
    "pending": TaskExecution.QUEUED,  # BigQuery, Databricks
    "queued": TaskExecution.QUEUED,  # Databricks
    "submitted": TaskExecution.QUEUED,
    "blocked": TaskExecution.WAITING_FOR_RESOURCES,  # Databricks
    "waiting_for_retry": TaskExecution.WAITING_FOR_RESOURCES,  # Databricks
    "maximum_concurrent_runs_reached": TaskExecution.WAITING_FOR_RESOURCES,  # Databricks
    "validating": TaskExecution.INITIALIZING,  # OpenAI batch
    "initializing": TaskExecution.INITIALIZING,
    "starting": TaskExecution.INITIALIZING,
    # running
    "running": TaskExecution.RUNNING,  # BigQuery, Databricks
    "in_progress": TaskExecution.RUNNING,  # OpenAI batch
    "finalizing": TaskExecution.RUNNING,  # OpenAI batch
    "terminating": TaskExecution.RUNNING,  # Databricks
    "cancelling": TaskExecution.RUNNING,  # OpenAI batch: still winding down
    "canceling": TaskExecution.RUNNING,
    # succeeded
    "done": TaskExecution.SUCCEEDED,  # BigQuery (errors are checked separately)
    "success": TaskExecution.SUCCEEDED,  # Databricks result state
    "succeeded": TaskExecution.SUCCEEDED,
    "completed": TaskExecution.SUCCEEDED,  # OpenAI batch
    # failed
    "failed": TaskExecution.FAILED,  # Databricks, OpenAI batch
    "error": TaskExecution.FAILED,
    "timedout": TaskExecution.FAILED,  # Databricks result state
    "timeout": TaskExecution.FAILED,
    "expired": TaskExecution.FAILED,  # OpenAI batch: not finished in its window
    "success_with_failures": TaskExecution.FAILED,  # Databricks: some tasks failed
    "upstream_failed": TaskExecution.FAILED,  # Databricks
    "internal_error": TaskExecution.RETRYABLE_FAILED,  # Databricks: the platform's fault
    # aborted
    "cancelled": TaskExecution.ABORTED,  # OpenAI batch
    "canceled": TaskExecution.ABORTED,  # Databricks result state
    "upstream_canceled": TaskExecution.ABORTED,  # Databricks
    "aborted": TaskExecution.ABORTED,
    "skipped": TaskExecution.ABORTED,  # Databricks: the run never started
    "excluded": TaskExecution.ABORTED,  # Databricks
}


def to_phase(state: str) -> Phase:
    """Map an external job state (any case) to a Flyte phase.

    Args:
        state: the state string the external system reports, such as ``"RUNNING"``
            or ``"cancelled"``.

    Returns:
        The ``TaskExecution.Phase``.

    Raises:
        ValueError: the state is not one flyteagents knows; the message names it.
    """
    try:
        return _STATES[state.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown job state {state!r}: map it to a phase in the agent") from None


def is_terminal_phase(phase: Phase) -> bool:
    """True when a job in this phase will not change again."""
    return phase in TERMINAL_PHASES
