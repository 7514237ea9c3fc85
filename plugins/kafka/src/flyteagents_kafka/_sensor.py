"""KafkaSensor: done when a (matching) message is produced to a topic after the sensor started."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from flyteagents import ExternalServiceError
from flyteagents.sensor import BaseSensor, PokeContext, poke_context

from ._cluster import EARLIEST, LATEST, FetchedRecord, KafkaCluster, cluster_for
from ._config import KafkaSensorConfig

__all__ = ["KafkaMessage", "KafkaMessages", "KafkaSensor"]

#: How many sensors' read positions one process remembers between pokes.
_MAX_TRACKED = 10_000


@dataclass
class KafkaMessage:
    """One message the sensor matched. Key, value and header values are decoded as UTF-8
    (undecodable bytes become ``\\xNN`` escapes)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    value: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class KafkaMessages:
    """The sensor's output: the matching messages, oldest first within each partition."""

    messages: list[KafkaMessage] = field(default_factory=list)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="backslashreplace")


class KafkaSensor(BaseSensor):
    """Waits until a message matching its config is produced to a Kafka topic.

    Stateless: when the task is created, ``start`` records the end offset of every
    partition (kept in resource_meta); each poke reads forward from there, a bounded batch
    per partition, and never commits offsets to any consumer group. Partitions that appear
    later are read from their beginning; if a partition's log was truncated or recreated
    (a broker that lost its data) it is read from its new start. A process remembers how
    far it has read for each waiting sensor, so a busy topic is scanned once, not from the
    start on every poke; another replica simply starts again from resource_meta.

    Example:
        >>> wait = KafkaSensor(
        ...     name="wait_for_order",
        ...     sensor_config=KafkaSensorConfig(bootstrap_servers="kafka:9092", topic="orders", key="42"),
        ...     timeout=3600,
        ... )
    """

    def __init__(self, name: str, sensor_config: KafkaSensorConfig, **kwargs: Any) -> None:
        if not isinstance(sensor_config, KafkaSensorConfig):
            raise TypeError(f"KafkaSensor needs a KafkaSensorConfig, got {type(sensor_config).__name__}")
        super().__init__(name=name, sensor_config=sensor_config, **kwargs)
        self._value_regex = re.compile(sensor_config.value_regex) if sensor_config.value_regex else None
        self._positions: OrderedDict[str, dict[int, int]] = OrderedDict()
        self._positions_lock = threading.Lock()
        # When each waiting sensor's current broker outage began (monotonic), in this process.
        self._outages: OrderedDict[str, float] = OrderedDict()

    @property
    def config(self) -> KafkaSensorConfig:
        """The sensor's config."""
        return self.sensor_config  # type: ignore[no-any-return]

    async def start(self) -> dict[str, Any] | None:  # type: ignore[override]
        """Record where every partition of the topic ends now (none while the topic does not exist)."""
        cluster = await cluster_for(self.config)
        offsets = await asyncio.wait_for(self._end_offsets(cluster), self.config.request_timeout)
        return {"offsets": {str(p): o for p, o in offsets.items()}}

    async def _end_offsets(self, cluster: KafkaCluster) -> dict[int, int]:
        partitions = await cluster.partitions(self.config.topic)
        if not partitions:
            return {}
        return await cluster.list_offsets(self.config.topic, partitions, LATEST)

    async def poke(self) -> KafkaMessages | None:
        """Read the next batch after the recorded offsets; return the matching messages, if any."""
        ctx = poke_context()
        state = ctx.state or {}
        start = {int(p): int(o) for p, o in (state.get("offsets") or {}).items()}
        with self._positions_lock:
            known = dict(self._positions.get(ctx.sensor_id) or {})
        try:
            found, positions = await asyncio.wait_for(self._read(start, known, ctx), self.config.request_timeout)
        except (ExternalServiceError, asyncio.TimeoutError) as exc:
            if isinstance(exc, ExternalServiceError) and not exc.retryable:
                raise
            return self._ride_out(ctx, exc)
        with self._positions_lock:
            self._outages.pop(ctx.sensor_id, None)
            if found or not ctx.sensor_id:
                self._positions.pop(ctx.sensor_id, None)
            else:
                self._positions[ctx.sensor_id] = positions
                self._positions.move_to_end(ctx.sensor_id)
                while len(self._positions) > _MAX_TRACKED:
                    self._positions.popitem(last=False)
        return KafkaMessages(messages=found) if found else None

    def _ride_out(self, ctx: PokeContext, exc: BaseException) -> None:
        """Answer "not yet" during a broker outage shorter than ``outage_budget``; past it, fail.

        Raises:
            ExternalServiceError: the outage outlasted the budget (not retryable), or the poke
                has no sensor id to time the outage by (retryable, counted by the engine).
        """
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer within {self.config.request_timeout:g} s"
        if not ctx.sensor_id:
            raise exc if isinstance(exc, ExternalServiceError) else ExternalServiceError(detail) from None
        now = time.monotonic()
        budget = self.config.outage_budget
        with self._positions_lock:
            since = self._outages.setdefault(ctx.sensor_id, now)
            self._outages.move_to_end(ctx.sensor_id)
            while len(self._outages) > _MAX_TRACKED:
                self._outages.popitem(last=False)
        lasted = now - since
        if lasted > budget:
            with self._positions_lock:
                self._outages.pop(ctx.sensor_id, None)
            raise ExternalServiceError(
                f"Kafka at {self.config.bootstrap_servers} unreachable for {lasted:.0f} s, longer than the "
                f"sensor's outage_budget of {budget:g} s; last error: {detail}",
                retryable=False,
            )
        ctx.waiting(f"Kafka unreachable for {lasted:.0f} s (outage budget {budget:g} s): {detail}")
        return None

    async def _read(
        self, start: dict[int, int], known: dict[int, int], ctx: PokeContext | None = None
    ) -> tuple[list[KafkaMessage], dict[int, int]]:
        config = self.config
        cluster = await cluster_for(config)
        partitions = await cluster.partitions(config.topic)
        if not partitions:
            if ctx is not None:
                ctx.waiting(f"topic {config.topic} does not exist (yet) on {config.bootstrap_servers}")
            return [], known
        # Partitions created after the sensor started are new in their entirety.
        positions = {p: known.get(p, start.get(p, 0)) for p in partitions}
        # Ask where each log ends first (cheap): an idle poke, the common case, fetches nothing.
        ends = await cluster.list_offsets(config.topic, partitions, LATEST)
        # Past the end: the log was truncated or recreated since (a broker that lost its data);
        # what it holds now came after us.
        behind = [p for p, end in ends.items() if positions[p] > end]
        if behind:
            positions.update(await cluster.list_offsets(config.topic, behind, EARLIEST))
        wanted = {p: positions[p] for p, end in ends.items() if end > positions[p]}
        if not wanted:
            return [], positions
        records, moved, out_of_range = await cluster.fetch(config.topic, wanted, config.max_bytes_per_poke)
        positions.update(moved)
        if out_of_range:  # truncated between the two requests
            positions.update(await cluster.list_offsets(config.topic, out_of_range, EARLIEST))
        found: list[KafkaMessage] = []
        for partition in sorted(records):
            for record in records[partition]:
                if self._matches(record):
                    found.append(self._message(record))
                    if len(found) >= config.max_messages:
                        return found, positions
        return found, positions

    def _matches(self, record: FetchedRecord) -> bool:
        config = self.config
        if config.key is not None and _text(record.key) != config.key:
            return False
        if config.headers:
            headers = {k: _text(v) for k, v in record.headers}
            if any(headers.get(k) != v for k, v in config.headers.items()):
                return False
        if self._value_regex is not None and not self._value_regex.search(_text(record.value) or ""):
            return False
        return True

    def _message(self, record: FetchedRecord) -> KafkaMessage:
        return KafkaMessage(
            topic=self.config.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=_text(record.key),
            value=_text(record.value),
            headers={k: _text(v) or "" for k, v in record.headers},
        )
