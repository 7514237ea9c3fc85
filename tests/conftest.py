"""Shared fixtures for the core tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import the Python file at ``path`` as ``module_name`` (in ``sys.modules``, so pickling and flytekit find it)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once per process, as ``python examples/<name>.py`` would."""
    module_name = f"examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    return import_file(EXAMPLES / f"{name}.py", module_name)


@pytest.fixture
def load_source(tmp_path: Path) -> Callable[[str, str], ModuleType]:
    """Import Python source text as module ``name``: ``load_source(source, name)``, from a file under tmp_path."""

    def load(source: str, name: str) -> ModuleType:
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        return import_file(path, name)

    return load


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
