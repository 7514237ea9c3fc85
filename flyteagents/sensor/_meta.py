"""SensorMetadata: what a waiting sensor's resource_meta holds, and the poke schedule it implies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .._exceptions import InvalidResourceMetaError
from .._models import ResourceMeta
from .._polling import PollPolicy, PollSchedule

__all__ = [
    "DEFAULT_JITTER",
    "DEFAULT_MAX_CONSECUTIVE_ERRORS",
    "DEFAULT_POKE_INTERVAL",
    "SensorMetadata",
    "next_poke_wait",
    "sensor_schedule",
]

#: Seconds between two pokes when a sensor sets no ``poke_interval``.
DEFAULT_POKE_INTERVAL = 5.0
#: The fraction by which a wait between pokes is lengthened at most, unless a sensor sets its own.
DEFAULT_JITTER = 0.1
#: Consecutive retryable poke errors after which a sensor fails, unless it sets its own.
DEFAULT_MAX_CONSECUTIVE_ERRORS = 5


@dataclass
class SensorMetadata(ResourceMeta):
    """What identifies one waiting sensor; a superset of flytekit's SensorMetadata.

    Everything is plain JSON: where the sensor lives, its config, its inputs, and the
    deadline (epoch seconds) when it has a timeout.
    """

    sensor_module: str
    sensor_name: str
    sensor_config: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    sensor_config_type: str | None = None
    sensor_id: str = ""
    deadline: float | None = None
    timeout: float | None = None
    soft_fail: bool = False
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    poke_interval: float | None = None
    output_prefix: str = ""
    state: dict[str, Any] | None = None
    started_at: float | None = None
    backoff: float | None = None
    max_poke_interval: float | None = None
    jitter: float | None = None


def next_poke_wait(handle: Any) -> float | None:
    """Seconds until a local run's next poke is due; None when its handle carries no schedule."""
    if isinstance(handle, SensorMetadata):
        meta = handle
    else:  # a job created through a service (FLYTEAGENTS_ENDPOINT): its resource_meta
        try:
            meta = SensorMetadata.decode(getattr(handle, "resource_meta", b""))
        except InvalidResourceMetaError:
            return None
    schedule = sensor_schedule(meta)
    if schedule is None:
        return None
    now = time.time()
    return max(schedule.next_due(now) - now, 0.0)


def sensor_schedule(meta: SensorMetadata, job: bytes = b"") -> PollSchedule | None:
    """When a sensor's pokes are due, from its resource_meta alone; None: whenever asked.

    Raises:
        ValueError: the sensor's options make no schedule (a negative interval, ...).
    """
    if not meta.poke_interval:
        return None
    policy = PollPolicy(
        interval=meta.poke_interval,
        backoff=1.0 if meta.backoff is None else meta.backoff,
        max_interval=meta.max_poke_interval,
        jitter=0.1 if meta.jitter is None else meta.jitter,
    )
    start = meta.started_at
    if start is None and meta.deadline is not None and meta.timeout is not None:
        start = meta.deadline - meta.timeout  # written before started_at existed
    return policy.schedule(meta.sensor_id or job.hex(), start, meta.deadline)
