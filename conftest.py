"""Fixtures shared by the core's and the plugins' tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parent / "tests"))

import flytekit_plugins


@pytest.fixture(scope="session")
def flytekit_plugin() -> Callable[[str], Path]:
    """Make flytekit's own plugin ``flytekitplugins-<name>`` importable: ``flytekit_plugin("bigquery")``.

    The default venv holds none of them (flytekit would import them on every ``import flytekit``), so
    compatibility tests install the one they compare with beside it, see tests/flytekit_plugins.py.
    """
    return flytekit_plugins.activate
