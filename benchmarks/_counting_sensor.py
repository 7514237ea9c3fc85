"""A flytekit sensor that asks an HTTP endpoint once per poke, for benchmarks/poll_rate.py.

flytekit's sensor service imports it by module name: run the service with this directory on PYTHONPATH.
"""

from __future__ import annotations

import datetime
from typing import Any

import aiohttp
from flytekit.sensor.base_sensor import BaseSensor


class CountingHTTPSensor(BaseSensor):
    """Done when ``url`` answers 200; each poke is one GET (the "external call" the benchmark counts)."""

    def __init__(self, name: str, timeout: datetime.timedelta | int | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, timeout=timeout, **kwargs)

    async def poke(self, url: str) -> bool:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
