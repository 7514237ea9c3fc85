"""Fixtures: one local BigQuery server per test session, and the environment pointing at it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bq_emulator import BigQueryEmulator

PROJECT = "test-project"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """The server, with Application Default Credentials and BIGQUERY_EMULATOR_HOST set for it."""
    with BigQueryEmulator(pending_polls=1, running_polls=1) as server:
        key = tmp_path_factory.mktemp("adc") / "service-account.json"
        key.write_text(json.dumps(server.service_account_info(PROJECT)))
        with pytest.MonkeyPatch.context() as env:
            env.setenv("BIGQUERY_EMULATOR_HOST", server.url)
            env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
            server.sql(
                "CREATE SCHEMA demo;"
                "CREATE TABLE demo.trips AS SELECT range AS id, 'city' || (range % 3) AS city,"
                " range * 1.5 AS miles FROM range(20)"
            )
            yield server
