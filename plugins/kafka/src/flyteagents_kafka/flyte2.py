"""KafkaSensor for Flyte 2 (the ``flyte`` SDK): the same sensor, poked by the same engine.

Add it to a ``flyte.TaskEnvironment``; a local run (``flyte.with_runcontext(mode="local")``)
pokes it in this process, and remotely ``flyteagents serve`` answers its template over
Flyte 2's connector protocol. Its output is ``messages``, a list of KafkaMessage.
"""

from __future__ import annotations

from typing import Any

from flyteagents.flyte2 import BaseSensor

from ._config import KafkaSensorConfig
from ._sensor import KafkaMessage, KafkaMessages
from ._sensor import KafkaSensor as _FlytekitKafkaSensor

__all__ = ["KafkaMessage", "KafkaMessages", "KafkaSensor", "KafkaSensorConfig"]


class KafkaSensor(BaseSensor):
    """Waits until a (matching) message is produced to a Kafka topic; outputs ``messages``.

    The arguments are those of ``flyteagents_kafka.KafkaSensor`` (a ``sensor_config`` and
    BaseSensor's options), plus flyte task options (``retries``, ...).

    Example:
        ```python
        wait = KafkaSensor(
            name="wait_for_order",
            sensor_config=KafkaSensorConfig(bootstrap_servers="kafka:9092", topic="orders", key="42"),
            timeout=3600,
        )
        env = flyte.TaskEnvironment.from_task("sensors", wait)
        ```
    """

    _engine_sensor = _FlytekitKafkaSensor

    def __init__(self, name: str, sensor_config: KafkaSensorConfig, **kwargs: Any) -> None:
        super().__init__(name=name, sensor_config=sensor_config, **kwargs)
