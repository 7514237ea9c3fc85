"""PokeContext: what the engine tells a running ``start``/``poke`` about the sensor task it serves."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
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
    _waiting: list[str] = field(default_factory=list, repr=False, compare=False)

    def waiting(self, reason: str) -> None:
        """Say why this poke answers "not yet": the RUNNING message reads ``waiting: <reason>``.

        For a condition the user may be waiting on by mistake (a topic or queue that does not
        exist, an outage the sensor rides out), so the task's status says so. Keep it short
        and free of secrets; the last reason given in a poke wins.
        """
        self._waiting.append(reason)

    @property
    def waiting_reason(self) -> str | None:
        """The reason the running poke gave for "not yet", if any."""
        return self._waiting[-1] if self._waiting else None


_current: contextvars.ContextVar[PokeContext | None] = contextvars.ContextVar("flyteagents_poke", default=None)


def poke_context() -> PokeContext:
    """The context of the ``start``/``poke`` call running now.

    Outside the engine (a sensor's poke called directly) it is an empty context with a
    blank id and prefix.
    """
    return _current.get() or PokeContext(sensor_id="", output_prefix="")
