"""One jobs API server per test; the agent's token secret set in the environment."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs with --import-mode=importlib
from jobs_api import TOKEN, JobsAPI


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[JobsAPI]:
    monkeypatch.setenv("FLYTEAGENTS_SECRET_EXAMPLE_TOKEN", TOKEN)
    with JobsAPI() as server:
        yield server
