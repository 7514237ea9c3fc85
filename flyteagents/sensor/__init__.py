"""Sensors: tasks that wait for a condition, poked by the sensor engine.

Write one by subclassing BaseSensor (``async def poke(self, ...) -> bool``) or by
decorating a poke function with ``@sensor``. FileSensor waits for files on any fsspec
filesystem, HTTPSensor for a URL's answer, TimeSensor for a moment. SensorEngine is the
async agent that serves task type ``sensor``.
"""

from ._base import BaseSensor
from ._context import PokeContext, poke_context
from ._decorator import FunctionSensor, sensor
from ._engine import SensorEngine
from ._file import FileMatch, FileSensor, FileSensorConfig
from ._http import HTTPResponse, HTTPSensor, HTTPSensorConfig
from ._meta import SensorMetadata
from ._time import TimeReached, TimeSensor, TimeSensorConfig

__all__ = [
    "BaseSensor",
    "FileMatch",
    "FileSensor",
    "FileSensorConfig",
    "FunctionSensor",
    "HTTPResponse",
    "HTTPSensor",
    "HTTPSensorConfig",
    "PokeContext",
    "SensorEngine",
    "SensorMetadata",
    "TimeReached",
    "TimeSensor",
    "TimeSensorConfig",
    "poke_context",
    "sensor",
]
