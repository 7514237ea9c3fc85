"""PokeContext: what the engine tells a running ``start``/``poke`` about the sensor task it serves."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

__all__ = ["PokeContext", "poke_context"]


@dataclass(frozen=True)
class PokeContext:
    """The sensor task a ``start`` or ``poke`` call serves.

    Args:
        sensor_id: stable id of the task attempt (execution/node/retry), the same on every poke.
        output_prefix: where the task's ``outputs.pb`` goes; a poke may write it itself before
            an irreversible side effect (deleting queue messages, ...), so a retried poke can
            answer with it.
        state: the JSON dict the sensor's ``start`` returned at create (None without ``start``).
    """

    sensor_id: str
    output_prefix: str
    state: dict[str, Any] | None = None


_current: contextvars.ContextVar[PokeContext | None] = contextvars.ContextVar("flyteagents_poke", default=None)


def poke_context() -> PokeContext:
    """The context of the ``start``/``poke`` call running now.

    Outside the engine (a sensor's poke called directly) it is an empty context with a
    blank id and prefix.
    """
    return _current.get() or PokeContext(sensor_id="", output_prefix="")
