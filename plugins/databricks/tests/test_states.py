"""Every Databricks run state maps to a phase, and none raises."""

from __future__ import annotations

import pytest
from flyteagents_databricks import run_phase
from flyteidl.core.execution_pb2 import TaskExecution as T


@pytest.mark.parametrize(
    ("life", "result", "phase"),
    [
        ("PENDING", None, T.QUEUED),
        ("QUEUED", None, T.QUEUED),
        ("BLOCKED", None, T.WAITING_FOR_RESOURCES),
        ("WAITING_FOR_RETRY", None, T.WAITING_FOR_RESOURCES),
        ("RUNNING", None, T.RUNNING),
        ("TERMINATING", None, T.RUNNING),
        ("TERMINATED", "SUCCESS", T.SUCCEEDED),
        ("TERMINATED", "SUCCESS_WITH_FAILURES", T.FAILED),
        ("TERMINATED", "FAILED", T.FAILED),
        ("TERMINATED", "TIMEDOUT", T.FAILED),
        ("TERMINATED", "CANCELED", T.ABORTED),
        ("TERMINATED", "UPSTREAM_CANCELED", T.ABORTED),
        ("TERMINATED", "UPSTREAM_FAILED", T.FAILED),
        ("TERMINATED", "EXCLUDED", T.ABORTED),
        ("SKIPPED", None, T.ABORTED),
        ("SKIPPED", "CANCELED", T.ABORTED),
        ("INTERNAL_ERROR", None, T.RETRYABLE_FAILED),
        ("INTERNAL_ERROR", "FAILED", T.RETRYABLE_FAILED),
        ("TERMINATED", None, T.FAILED),
        ("TERMINATED", "SOMETHING_NEW", T.FAILED),
        ("SOMETHING_NEW", None, T.RUNNING),
        (None, None, T.RUNNING),
    ],
)
def test_run_state_to_phase(life: str | None, result: str | None, phase: int) -> None:
    state = {"life_cycle_state": life, "result_state": result}
    got, name = run_phase(state)
    assert got == phase, (life, result, T.Phase.Name(got))
    assert name
