"""Shared fixtures for the core tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once per process, as ``python examples/<name>.py`` would."""
    module_name = f"examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def custom_agent_example() -> ModuleType:
    """``examples/custom_agent.py``, imported once."""
    return load_example("custom_agent")


@pytest.fixture
def jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory for the example agent's job files."""
    path = tmp_path / "jobs"
    monkeypatch.setenv("FLYTEAGENTS_EXAMPLE_JOBS", str(path))
    return path


@pytest.fixture
def example_env(jobs_dir: Path) -> dict[str, str]:
    """The environment for running an example in a subprocess."""
    env = dict(os.environ)
    env["FLYTEAGENTS_EXAMPLE_JOBS"] = str(jobs_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env
