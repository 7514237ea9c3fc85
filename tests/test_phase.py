"""External job states map to Flyte phases."""

from __future__ import annotations

import pytest
from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents import is_terminal_phase, to_phase


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        ("PENDING", TaskExecution.QUEUED),
        ("RUNNING", TaskExecution.RUNNING),
        ("DONE", TaskExecution.SUCCEEDED),
        ("QUEUED", TaskExecution.QUEUED),
        ("BLOCKED", TaskExecution.WAITING_FOR_RESOURCES),
        ("TERMINATING", TaskExecution.RUNNING),
        ("SUCCESS", TaskExecution.SUCCEEDED),
        ("FAILED", TaskExecution.FAILED),
        ("TIMEDOUT", TaskExecution.FAILED),
        ("CANCELED", TaskExecution.ABORTED),
        ("INTERNAL_ERROR", TaskExecution.RETRYABLE_FAILED),
        ("validating", TaskExecution.INITIALIZING),
        ("in_progress", TaskExecution.RUNNING),
        ("cancelling", TaskExecution.RUNNING),
        ("cancelled", TaskExecution.ABORTED),
        ("expired", TaskExecution.FAILED),
        ("completed", TaskExecution.SUCCEEDED),
        (" Running ", TaskExecution.RUNNING),
    ],
)
def test_known_states(state: str, phase: int) -> None:
    assert to_phase(state) == phase


def test_cancelled_is_aborted_never_failed() -> None:
    for state in ("cancelled", "canceled", "CANCELED", "upstream_canceled"):
        assert to_phase(state) == TaskExecution.ABORTED


def test_unknown_state_names_it() -> None:
    with pytest.raises(ValueError, match="unknown job state 'WOBBLING'"):
        to_phase("WOBBLING")


def test_terminal_phases() -> None:
    assert is_terminal_phase(TaskExecution.SUCCEEDED)
    assert is_terminal_phase(TaskExecution.ABORTED)
    assert is_terminal_phase(TaskExecution.RETRYABLE_FAILED)
    assert not is_terminal_phase(TaskExecution.RUNNING)
    assert not is_terminal_phase(TaskExecution.QUEUED)
