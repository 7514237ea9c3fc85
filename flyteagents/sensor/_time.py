"""TimeSensor: waits until a moment, or for a duration after the task started; it calls nothing."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any

from .._exceptions import InvalidTaskError
from ._base import BaseSensor, _Seconds, _seconds
from ._context import poke_context

__all__ = ["TimeReached", "TimeSensor", "TimeSensorConfig"]

#: A TimeSensor's poke only reads the clock: checking every second costs nothing.
DEFAULT_TIME_POKE_INTERVAL = 1.0


@dataclass
class TimeSensorConfig:
    """When a TimeSensor is done: at ``until`` (ISO 8601; UTC when it names no offset), or
    ``delay`` seconds after the task started. Exactly one of the two."""

    until: str | None = None
    delay: float | None = None

    def check(self) -> None:
        """Raise InvalidTaskError (a ValueError) unless exactly one of until/delay is usable."""
        if (self.until is None) == (self.delay is None):
            raise InvalidTaskError("TimeSensor needs exactly one of until (a datetime) and delay (seconds)")
        if self.delay is not None and not self.delay >= 0:
            raise InvalidTaskError(f"TimeSensor delay must not be negative, got {self.delay!r}")
        if self.until is not None:
            _parse(self.until)


@dataclass
class TimeReached:
    """A TimeSensor's outputs: the moment it waited for, ISO 8601 in UTC."""

    target: str = ""


def _parse(value: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidTaskError(f"TimeSensor until is not an ISO 8601 datetime: {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.timezone.utc)


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()


class TimeSensor(BaseSensor):
    """Waits until a moment (``until``) or for a time after the task started (``delay``).

    Its poke reads the clock and nothing else, so it may run as often as it likes: the
    default ``poke_interval`` is 1 s. The task's start is recorded when the engine creates
    it, so a delay counts from then on every replica. Outputs a TimeReached.

    Args:
        name: the task's name.
        until: a timezone-aware datetime, or an ISO 8601 string (UTC without an offset).
        delay: seconds (or a timedelta) to wait after the task started.
        sensor_config: a whole TimeSensorConfig instead of ``until``/``delay``.
        poke_interval: as for BaseSensor; 1 s by default.
        **kwargs: BaseSensor's other options (``timeout``, ``soft_fail``, ...).

    Example:
        ```python
        settle = TimeSensor(name="settle", delay=timedelta(minutes=10))
        market_open = TimeSensor(name="market_open", until="2026-12-01T14:30:00+00:00")
        ```
    """

    def __init__(
        self,
        name: str,
        until: datetime.datetime | str | None = None,
        delay: _Seconds | None = None,
        sensor_config: TimeSensorConfig | None = None,
        poke_interval: _Seconds | None = DEFAULT_TIME_POKE_INTERVAL,
        **kwargs: Any,
    ) -> None:
        if sensor_config is None:
            if isinstance(until, datetime.datetime):
                if until.tzinfo is None:
                    raise InvalidTaskError("TimeSensor until must be timezone-aware (datetime.timezone.utc, ...)")
                until = until.isoformat()
            sensor_config = TimeSensorConfig(until=until, delay=_seconds(delay, "delay"))
        elif until is not None or delay is not None:
            raise TypeError("TimeSensor: pass either sensor_config or until/delay, not both")
        sensor_config.check()
        super().__init__(name=name, sensor_config=sensor_config, poke_interval=poke_interval, **kwargs)

    @property
    def config(self) -> TimeSensorConfig:
        """This sensor's TimeSensorConfig."""
        return self.sensor_config  # type: ignore[no-any-return]

    def target(self, started_at: float) -> float:
        """The epoch second this sensor is done at, for a task that started at ``started_at``."""
        config = self.config
        if config.until is not None:
            return _parse(config.until).timestamp()
        return started_at + (config.delay or 0.0)

    async def start(self, **inputs: Any) -> dict[str, Any] | None:
        """Record the moment to wait for, so every replica waits for the same one."""
        return {"target": self.target(time.time())}

    async def poke(self) -> TimeReached | None:
        """Done once the clock has reached the target."""
        state = poke_context().state or {}
        target = state.get("target")
        if not isinstance(target, (int, float)):  # poked without the engine's start (called directly)
            target = self.target(time.time())
        if time.time() < target:
            return None
        return TimeReached(target=_iso(target))
