"""KafkaCluster: one pooled aiokafka client per cluster settings, reading partitions statelessly.

Every sensor watching the same cluster (same servers, protocol, user, secret names and the values
they resolve to) shares one ``AIOKafkaClient``, hence one connection per broker, in each event loop. Reads
are plain Fetch/ListOffsets requests at explicit offsets: no consumer group, no commit,
nothing to rebalance, so thousands of sensors poke concurrently over the same connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import random
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.cluster import ClusterMetadata
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.errors import for_code as kafka_error_for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from flyteagents import ExternalServiceError, get_secret, untrusted_certificate
from flyteagents.plugin import ClientPool, secret_fingerprint

from ._config import KafkaSensorConfig

__all__ = ["EARLIEST", "LATEST", "FetchedRecord", "KafkaCluster", "close_clusters", "cluster_for"]

logger = logging.getLogger("flyteagents_kafka")

#: ListOffsets timestamps meaning "the log start" and "the log end".
EARLIEST = -2
LATEST = -1
_READ_UNCOMMITTED = 0
_OFFSET_OUT_OF_RANGE = 1
_FETCH_MAX_WAIT_MS = 100
#: Longest one request to a broker may take; each poke also bounds its whole read.
_CLIENT_REQUEST_TIMEOUT_MS = 10_000
#: A topic no sensor has poked for this long is dropped from the client's metadata requests.
TOPIC_IDLE_SECONDS = 600.0
#: Most cluster clients kept per event loop.
MAX_CLUSTERS = 64

_T = TypeVar("_T")


def _detached(coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
    """Run ``coro`` as a task with an empty context.

    The shared client starts long-lived tasks (its metadata synchronizer, a reader per
    connection) from whichever call first needs them; created in that call's context they
    would log forever as the sensor that happened to make that call.
    """
    return contextvars.Context().run(asyncio.get_running_loop().create_task, coro)


@dataclass(frozen=True)
class ClusterKey:
    """What makes two sensors' connections interchangeable: secret names, and a digest of their values.

    The digest keeps apart calls that resolve one name to different values (a Flyte 2 task's own
    credentials, from its Connection), and picks up a rotated secret; values themselves are never kept.
    """

    servers: tuple[str, ...]
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password_secret: str | None
    ssl_cafile: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_key_password_secret: str | None
    secrets_digest: str | None = None

    @classmethod
    def of(cls, config: KafkaSensorConfig) -> ClusterKey:
        return cls(
            servers=config.servers,
            security_protocol=config.security_protocol,
            sasl_mechanism=config.sasl_mechanism,
            sasl_username=config.sasl_username,
            sasl_password_secret=config.sasl_password_secret,
            ssl_cafile=config.ssl_cafile,
            ssl_certfile=config.ssl_certfile,
            ssl_keyfile=config.ssl_keyfile,
            ssl_key_password_secret=config.ssl_key_password_secret,
            secrets_digest=_digest(config.sasl_password_secret, config.ssl_key_password_secret),
        )


def _digest(*secrets: str | None) -> str | None:
    """A short one-way digest of the named secrets' current values (None when none is named)."""
    named = [name for name in secrets if name]
    if not named:
        return None
    return secret_fingerprint("\0".join(get_secret(name) for name in named))


@dataclass
class FetchedRecord:
    """One record read from a partition."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _bad(exc: BaseException, what: str) -> ExternalServiceError:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ExternalServiceError(f"Kafka {what} failed: {detail}", retryable=True)


async def _configuration_error(key: ClusterKey, kwargs: dict[str, Any]) -> ExternalServiceError | None:
    """After a failed bootstrap, whether the TLS certificate or the SASL login is what failed (aiokafka only logs why).

    Both are configuration errors, the same on every attempt: not retryable, and the message says
    what to set, rather than "unreachable" until the outage budget ends. One connection to each
    bootstrap server, with the client's own settings, shows the error.
    """
    if key.security_protocol == "PLAINTEXT":
        return None
    settings = {k: v for k, v in kwargs.items() if k != "bootstrap_servers"}
    for server in key.servers:
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **settings), 5)
        except Exception as exc:
            if untrusted_certificate(exc):
                return ExternalServiceError(
                    f"the TLS certificate of Kafka at {server} is not trusted ({exc}): set ssl_cafile in the"
                    " KafkaSensorConfig to a PEM file (on the agent) of the CA that signed the brokers'"
                    " certificates, and name the brokers by a host name their certificates are for",
                    retryable=False,
                )
            if isinstance(exc, (SaslAuthenticationFailed, UnsupportedSaslMechanismError)):
                return ExternalServiceError(
                    f"Kafka at {server} refused the SASL login of {key.sasl_username!r} ({exc}): check"
                    f" sasl_username, sasl_mechanism and the password in the secret {key.sasl_password_secret!r}",
                    retryable=False,
                )
            continue
        conn.close()
    return None


class _WatchingClient(AIOKafkaClient):  # type: ignore[misc]
    """An AIOKafkaClient whose metadata requests never ask the broker to create a topic.

    aiokafka always sets ``allow_auto_topic_creation``; a sensor only watches, and must not
    create the topic it waits for (with the broker's default partition count, at that).
    The body follows ``AIOKafkaClient._metadata_update`` (aiokafka 0.14, Apache-2.0).
    """

    async def bootstrap(self) -> None:
        """Bootstrap as AIOKafkaClient does, its background synchronizer in no caller's context."""
        await _detached(super().bootstrap())

    async def _get_conn(self, node_id: Any, *, group: Any = ConnectionGroup.DEFAULT, no_hint: bool = False) -> Any:
        conn = self._conns.get((node_id, group))
        if conn is not None and conn.connected():
            return conn  # the common case: no new task
        # A new connection starts its reader task: keep it out of the calling sensor's context.
        return await _detached(super()._get_conn(node_id, group=group, no_hint=no_hint))

    async def _metadata_update(self, cluster_metadata: ClusterMetadata, topics: Any) -> bool:
        # No topics means none (brokers only), not "every topic in the cluster" as None would.
        request = MetadataRequest(list(topics or ()), allow_auto_topic_creation=False)
        nodeids: list[Any] = [b.nodeId for b in self.cluster.brokers()]
        bootstrap_id = ("bootstrap", ConnectionGroup.DEFAULT)
        if bootstrap_id in self._conns:
            nodeids.append("bootstrap")
        random.shuffle(nodeids)
        for node_id in nodeids:
            conn = await self._get_conn(node_id)
            if conn is None:
                continue
            try:
                metadata = await conn.send(request)
            except (KafkaError, asyncio.TimeoutError) as err:
                logger.debug("metadata request to node %s failed: %r", node_id, err)
                continue
            if not metadata.brokers:
                return False
            cluster_metadata.update_metadata(metadata)
            if bootstrap_id in self._conns and len(self.cluster.brokers()):
                self._conns.pop(bootstrap_id).close()
            return True
        cluster_metadata.failed_update(None)
        return False


class KafkaCluster:
    """The shared client of one Kafka cluster, created on first use and rebuilt if bootstrap failed."""

    def __init__(self, key: ClusterKey, topic_idle_seconds: float = TOPIC_IDLE_SECONDS) -> None:
        self.key = key
        self.topic_idle_seconds = topic_idle_seconds
        self._client: AIOKafkaClient | None = None
        self._lock = asyncio.Lock()
        self._last_used: dict[str, float] = {}
        self._last_sweep = 0.0

    async def client(self) -> AIOKafkaClient:
        """The connected client; bootstraps it on first use.

        Raises:
            ExternalServiceError: no bootstrap server answered (retryable).
        """
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                client = _WatchingClient(**self._client_kwargs())
                try:
                    await client.bootstrap()
                except (KafkaError, OSError) as exc:
                    await client.close()
                    refused = await _configuration_error(self.key, self._client_kwargs())
                    raise refused or _bad(exc, f"bootstrap from {','.join(self.key.servers)}") from None
                self._client = client
        return self._client

    def _client_kwargs(self) -> dict[str, Any]:
        key = self.key
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(key.servers),
            "client_id": "flyteagents-kafka-sensor",
            "request_timeout_ms": _CLIENT_REQUEST_TIMEOUT_MS,
            "security_protocol": key.security_protocol,
        }
        if key.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = create_ssl_context(
                cafile=key.ssl_cafile,
                certfile=key.ssl_certfile,
                keyfile=key.ssl_keyfile,
                password=get_secret(key.ssl_key_password_secret) if key.ssl_key_password_secret else None,
            )
        if key.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = key.sasl_mechanism
            kwargs["sasl_plain_username"] = key.sasl_username
            kwargs["sasl_plain_password"] = get_secret(key.sasl_password_secret or "")
        return kwargs

    def watched_topics(self) -> set[str]:
        """The topics the client asks the brokers about in its metadata requests."""
        return set(self._client._topics) if self._client is not None else set()

    def _use(self, client: AIOKafkaClient, topic: str) -> None:
        """Note that a sensor uses ``topic`` now; drop topics nobody used for ``topic_idle_seconds``."""
        now = time.monotonic()
        self._last_used[topic] = now
        if now - self._last_sweep < min(self.topic_idle_seconds / 4, 60.0):
            return
        self._last_sweep = now
        idle = {t for t, used in self._last_used.items() if now - used > self.topic_idle_seconds}
        if idle:
            for t in idle:
                del self._last_used[t]
            # Metadata requests stop naming them (and stop warning about the ones that do not exist).
            client.set_topics(set(client._topics) - idle)
            logger.info("stopped watching %d idle Kafka topic(s): %s", len(idle), ", ".join(sorted(idle))[:200])

    async def partitions(self, topic: str) -> list[int] | None:
        """The topic's partition ids, or None while the topic does not exist."""
        client = await self.client()
        self._use(client, topic)
        parts = client.cluster.partitions_for_topic(topic) if topic in client._topics else None
        if not parts:
            client.add_topic(topic)
            try:
                updated = await asyncio.wait_for(client.force_metadata_update(), _CLIENT_REQUEST_TIMEOUT_MS / 1000)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                raise _bad(exc, f"metadata for topic {topic}") from None
            if not updated:
                # No broker answered: whether the topic exists is unknown, not "no".
                raise _bad(KafkaError("no broker answered"), f"metadata for topic {topic}")
            parts = client.cluster.partitions_for_topic(topic)
        return sorted(parts) if parts else None

    def _by_leader(self, client: AIOKafkaClient, topic: str, partitions: list[int]) -> dict[int, list[int]]:
        leaders: dict[int, list[int]] = collections.defaultdict(list)
        missing = False
        for partition in partitions:
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            if leader is None or leader < 0:
                missing = True
                continue
            leaders[leader].append(partition)
        if missing:
            client.force_metadata_update()
        return leaders

    async def list_offsets(self, topic: str, partitions: list[int], timestamp: int) -> dict[int, int]:
        """Each partition's log start (``EARLIEST``) or end (``LATEST``) offset.

        Partitions whose leader is unknown right now are left out (metadata is refreshed).

        Raises:
            ExternalServiceError: a broker could not be reached (retryable).
        """
        client = await self.client()
        leaders = self._by_leader(client, topic, partitions)

        async def one(node: int, parts: list[int]) -> dict[int, int]:
            request = OffsetRequest(-1, _READ_UNCOMMITTED, [(topic, [(p, timestamp) for p in parts])])
            response = await client.send(node, request)
            found: dict[int, int] = {}
            for _topic, part_data in response.topics:
                for partition, error_code, *info in part_data:
                    if error_code:
                        self._on_partition_error(client, error_code)
                    elif response.API_VERSION == 0:
                        found[partition] = info[0][0] if info[0] else 0
                    else:
                        found[partition] = info[-1]
            return found

        try:
            results = await asyncio.gather(*(one(node, parts) for node, parts in leaders.items()))
        except (KafkaError, OSError) as exc:
            client.force_metadata_update()
            raise _bad(exc, f"list offsets of {topic}") from None
        return {p: o for result in results for p, o in result.items()}

    async def fetch(
        self, topic: str, positions: dict[int, int], max_bytes: int
    ) -> tuple[dict[int, list[FetchedRecord]], dict[int, int], list[int]]:
        """Read forward from ``positions`` (partition -> next offset), at most ``max_bytes`` per partition.

        Returns:
            (records by partition, next offset by partition, partitions whose offset is out of
            range: the log was truncated or recreated).

        Raises:
            ExternalServiceError: a broker could not be reached (retryable).
        """
        client = await self.client()
        leaders = self._by_leader(client, topic, sorted(positions))

        async def one(node: int, parts: list[int]) -> Any:
            request = FetchRequest(
                # Only partitions known to hold new records are fetched, so min_bytes=1 returns at once;
                # max_wait only bounds a broker still assembling them (Tansu answers 0 ms with nothing).
                _FETCH_MAX_WAIT_MS,
                1,
                max_bytes * len(parts),
                _READ_UNCOMMITTED,
                [(topic, [(p, positions[p], max_bytes) for p in parts])],
            )
            return await client.send(node, request)

        try:
            responses = await asyncio.gather(*(one(node, parts) for node, parts in leaders.items()))
        except (KafkaError, OSError) as exc:
            client.force_metadata_update()
            raise _bad(exc, f"fetch from {topic}") from None
        records: dict[int, list[FetchedRecord]] = {}
        next_positions = dict(positions)
        out_of_range: list[int] = []
        for response in responses:
            for _topic, parts in response.topics:
                for partition, error_code, _highwater, *part_data in parts:
                    if error_code == _OFFSET_OUT_OF_RANGE:
                        out_of_range.append(partition)
                    elif error_code:
                        self._on_partition_error(client, error_code)
                    else:
                        got = list(_records(partition, part_data[-1], positions[partition]))
                        records[partition] = got
                        if got:
                            next_positions[partition] = got[-1].offset + 1
        return records, next_positions, out_of_range

    @staticmethod
    def _on_partition_error(client: AIOKafkaClient, error_code: int) -> None:
        error = kafka_error_for_code(error_code)
        logger.debug("Kafka partition error %s; refreshing metadata", error.__name__)
        if getattr(error, "invalid_metadata", False) or getattr(error, "retriable", False):
            client.force_metadata_update()
        else:
            raise ExternalServiceError(f"Kafka answered {error.__name__}", retryable=False)

    async def close(self) -> None:
        """Close the client's connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _records(partition: int, data: bytes | None, start: int) -> Iterator[FetchedRecord]:
    if not data:
        return
    batches = MemoryRecords(data)
    while batches.has_next():
        batch = batches.next_batch()
        if batch is None:
            break
        if getattr(batch, "is_control_batch", False):
            continue
        for record in batch:
            if record.offset < start:
                continue  # a batch can begin before the offset asked for
            yield FetchedRecord(
                partition=partition,
                offset=record.offset,
                timestamp=record.timestamp or 0,
                key=record.key,
                value=record.value,
                headers=list(record.headers or []),
            )


#: One KafkaCluster per event loop and connection settings, closed with its loop.
#: (Its settings come from task templates: at most MAX_CLUSTERS, least recently used evicted.)
_CLUSTERS: ClientPool[ClusterKey, KafkaCluster] = ClientPool(KafkaCluster, max_size=MAX_CLUSTERS)


async def cluster_for(config: KafkaSensorConfig) -> KafkaCluster:
    """The process-wide KafkaCluster for a config's connection settings, in the running loop."""
    return await _CLUSTERS.get(ClusterKey.of(config))


async def close_clusters() -> None:
    """Close every cluster client of the running loop (agent shutdown, tests)."""
    await _CLUSTERS.aclose()
