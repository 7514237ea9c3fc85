"""Answering GetTask from what the service last learned, until the agent's next call is due.

FlytePropeller polls GetTask at its own rate, which the service cannot slow down. For an agent
with a poll schedule (a sensor's poke_interval, an async agent's ``poll_policy``), the service
calls ``get`` at most once per slot of the job's schedule and answers the GetTasks in between
with the response of that call. The memory is per replica and bounded: an entry is dropped when
its job ends (a terminal answer is never kept) or is deleted, and the least recently polled
entries go first when the count or byte cap is reached.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flyteidl.admin import agent_pb2

from .._agent import AsyncAgentBase
from .._exceptions import InvalidResourceMetaError
from .._models import ResourceMeta
from .._phase import TERMINAL_PHASES

__all__ = ["PollCache"]

_Key = tuple[Any, bytes]
# What an entry costs beyond its key and response bytes (the entry, the dict slot, the tuple key).
_ENTRY_OVERHEAD = 200


class _Entry:
    __slots__ = ("response", "size", "slot")

    def __init__(self, slot: int, response: agent_pb2.GetTaskResponse | None, size: int) -> None:
        self.slot = slot
        self.response = response
        self.size = size


class PollCache:
    """Per job: the schedule slot of the last ``get`` and the response it gave.

    ``check`` says whether a GetTask must call the agent (and claims the slot, so concurrent
    GetTasks of the same job in that slot are answered from memory rather than calling too);
    ``keep`` records the fresh response. A job's first GetTask on a replica always calls.

    Args:
        max_entries: most jobs remembered at once.
        max_bytes: most bytes of resource_meta and responses remembered at once.
        max_entry_bytes: a response bigger than this is not kept (its job calls ``get`` on every poll).
        clock: the wall clock, in epoch seconds (schedules are shared across replicas through it).
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.clock = clock
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._bytes = 0
        #: GetTasks answered from memory, and GetTasks that called the agent, since start
        self.hits = 0
        self.calls = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """The bytes the remembered entries account for."""
        return self._bytes

    def check(
        self, agent: AsyncAgentBase, meta: ResourceMeta, resource_meta: bytes
    ) -> tuple[_Key | None, agent_pb2.GetTaskResponse | None]:
        """Whether this GetTask calls ``get``: (a claim to pass to ``keep``, None), or (None, the answer).

        (None, None) means: call ``get``, nothing will be remembered (the job has no schedule).
        """
        try:
            schedule = agent.poll_schedule(meta, resource_meta)
        except (ValueError, TypeError) as exc:  # options in resource_meta no schedule can follow
            raise InvalidResourceMetaError(f"resource_meta gives no poll schedule: {exc}") from None
        if schedule is None:
            self.calls += 1
            return None, None
        key = (agent.task_category, resource_meta)
        slot = schedule.slot(self.clock())[0]
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            entries.move_to_end(key)
            if entry.slot == slot and entry.response is not None:
                self.hits += 1
                return None, entry.response
            entry.slot = slot  # claimed: calls in this slot from now on get the last answer
        else:
            size = len(resource_meta) + _ENTRY_OVERHEAD
            entries[key] = _Entry(slot, None, size)
            self._bytes += size
            self._evict()
        self.calls += 1
        return key, None

    def keep(self, key: _Key, response: agent_pb2.GetTaskResponse) -> agent_pb2.GetTaskResponse:
        """Remember the response of the call ``check`` claimed; a terminal one ends the job's entry."""
        entry = self._entries.get(key)
        if entry is None:  # evicted or deleted while the call ran
            return response
        if response.resource.phase in TERMINAL_PHASES:
            self._drop(key)
            return response
        size = len(key[1]) + _ENTRY_OVERHEAD + response.ByteSize()
        if size > self.max_entry_bytes:
            self._drop(key)
            return response
        self._bytes += size - entry.size
        entry.size = size
        entry.response = response
        self._evict()
        return response

    def forget(self, agent: AsyncAgentBase, resource_meta: bytes) -> None:
        """Drop a job's entry (it was deleted)."""
        self._drop((agent.task_category, resource_meta))

    def _drop(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def _evict(self) -> None:
        entries = self._entries
        while entries and (len(entries) > self.max_entries or self._bytes > self.max_bytes):
            _, entry = entries.popitem(last=False)
            self._bytes -= entry.size
