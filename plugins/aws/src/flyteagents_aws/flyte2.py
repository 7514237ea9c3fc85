"""SQSSensor for Flyte 2 (the ``flyte`` SDK): the same sensor, poked by the same engine.

Add it to a ``flyte.TaskEnvironment``; a local run (``flyte.with_runcontext(mode="local")``)
pokes it in this process, and remotely ``flyteagents serve`` answers its template over
Flyte 2's connector protocol. Its output is ``messages``, a list of SQSMessage.
"""

from __future__ import annotations

from typing import Any

from flyteagents.flyte2 import BaseSensor

from ._config import SQSSensorConfig
from ._sensor import SQSMessage, SQSMessages
from ._sensor import SQSSensor as _FlytekitSQSSensor

__all__ = ["SQSMessage", "SQSMessages", "SQSSensor", "SQSSensorConfig"]


class SQSSensor(BaseSensor):
    """Waits until a (matching) message arrives on an SQS queue; outputs ``messages``.

    The arguments are those of ``flyteagents_aws.SQSSensor`` (a ``sensor_config`` and
    BaseSensor's options), plus flyte task options (``retries``, ...).

    Example:
        ```python
        wait = SQSSensor(
            name="wait_for_order",
            sensor_config=SQSSensorConfig(queue_url=QUEUE, json_path="$.status", json_value="paid"),
            timeout=3600,
        )
        env = flyte.TaskEnvironment.from_task("sensors", wait)
        ```
    """

    _engine_sensor = _FlytekitSQSSensor

    def __init__(self, name: str, sensor_config: SQSSensorConfig, **kwargs: Any) -> None:
        super().__init__(name=name, sensor_config=sensor_config, **kwargs)
