"""A sensor that is done at once and outputs a dataclass, for benchmarks/service.py.

The service imports it by module name: run it with this directory on the path (its working directory).
"""

from __future__ import annotations

from dataclasses import dataclass

from flyteagents import BaseSensor


@dataclass
class Found:
    """What the sensor found: its outputs."""

    path: str
    size: int
    ready: bool


class FoundSensor(BaseSensor):
    """Answers SUCCEEDED with outputs on the first poke (a GetTask that converts dataclass outputs)."""

    async def poke(self, path: str) -> Found | None:
        return Found(path=path, size=3, ready=True)
