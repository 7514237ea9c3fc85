"""Fixtures shared by the core's and the plugins' tests."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parent / "tests"))

import flytekit_plugins

# Importing the flyte SDK (the Flyte 2 tests do, when they are collected) registers obstore's fsspec
# classes for s3/gs/abfs in place of s3fs, gcsfs and adlfs, for the whole process. Recorded before
# any test module is imported, and put back before each test: the other tests keep the
# implementations their users have (the Flyte 2 tests touch only local paths through fsspec).
_FSSPEC_REGISTRY = importlib.import_module("fsspec.registry")._registry  # fsspec.registry is shadowed
_OBSTORE_PROTOCOLS = ("s3", "gs", "abfs", "abfss")
_FSSPEC_BEFORE_FLYTE = {p: _FSSPEC_REGISTRY.get(p) for p in _OBSTORE_PROTOCOLS}


@pytest.fixture(autouse=True)
def _fsspec_without_flytes_obstore() -> Iterator[None]:
    for protocol, cls in _FSSPEC_BEFORE_FLYTE.items():
        if cls is None:
            _FSSPEC_REGISTRY.pop(protocol, None)
        else:
            _FSSPEC_REGISTRY[protocol] = cls
    yield


@pytest.fixture(scope="session")
def flytekit_plugin() -> Callable[[str], Path]:
    """Make flytekit's own plugin ``flytekitplugins-<name>`` importable: ``flytekit_plugin("bigquery")``.

    The default venv holds none of them (flytekit would import them on every ``import flytekit``), so
    compatibility tests install the one they compare with beside it, see tests/flytekit_plugins.py.
    """
    return flytekit_plugins.activate
