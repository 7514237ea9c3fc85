"""Fixtures: one local BigQuery server per test session, and the environment pointing at it."""

from __future__ import annotations

import json
import os
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
        saved = {k: os.environ.get(k) for k in ("BIGQUERY_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")}
        os.environ["BIGQUERY_EMULATOR_HOST"] = server.url
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)
        server.sql(
            "CREATE SCHEMA demo;"
            "CREATE TABLE demo.trips AS SELECT range AS id, 'city' || (range % 3) AS city,"
            " range * 1.5 AS miles FROM range(20)"
        )
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
