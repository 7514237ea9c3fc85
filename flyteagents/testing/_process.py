"""ServerProcess: a test server run as a subprocess on a loopback port, started and always stopped."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO, TypeVar

__all__ = ["ServerProcess", "free_port"]

_P = TypeVar("_P", bound="ServerProcess")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess: ``start`` runs it and waits until it is ready, ``stop`` ends it.

    Subclasses give the ``command`` (and optionally ``environment`` and ``ready``); the
    process's output goes to a temporary file and ends up in the error when it fails to start.
    Use it as a context manager.

    Args:
        host: the loopback address it listens on.
        port: its port; 0 picks a free one (kept across ``restart``).
        startup_timeout: seconds to wait for ``ready``.
    """

    #: What the server is called in errors.
    name = "server"
    #: Seconds between readiness checks while it starts.
    poll_interval = 0.02

    def __init__(self, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that runs the server."""
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The server's environment; None inherits this process's."""
        return None

    def ready(self) -> bool:
        """Whether the server answers yet; by default, whether its port accepts a connection."""
        try:
            socket.create_connection((self.host, self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self: _P) -> _P:
        """Start the server and wait until it is ready.

        Raises:
            RuntimeError: it exited or was not ready within ``startup_timeout``; the message
                carries the end of its output.
        """
        if self.running:
            return self
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            if self.ready():
                return self
            time.sleep(self.poll_interval)
        output = self._output()
        self.stop()
        raise RuntimeError(f"{self.name} did not start on {self.host}:{self.port}: {output[-2000:]}")

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 5 s) and close its log."""
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

    def restart(self: _P) -> _P:
        """Stop, then start again on the same port."""
        self.stop()
        return self.start()

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __enter__(self: _P) -> _P:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
