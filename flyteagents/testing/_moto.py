"""MotoServer: a real ``moto_server`` process (S3, SQS, ...) on a free loopback port, for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import IO

__all__ = ["MotoServer"]

#: Fake credentials moto accepts; no real account is ever involved.
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """Starts ``moto_server`` as a subprocess on 127.0.0.1 and stops it afterwards.

    Use it as a context manager (or call ``start``/``stop``); point clients at
    ``endpoint_url`` with the fake credentials in ``credentials``/``env``.

    Example:
        >>> with MotoServer() as moto:
        ...     s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, **moto.credentials)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The server's base URL, such as ``http://127.0.0.1:43210``."""
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs at this server with fake credentials."""
        return {**MOTO_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint_url}

    @property
    def credentials(self) -> dict[str, str]:
        """boto3 client keyword arguments for the fake credentials and region."""
        return {
            "aws_access_key_id": MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": MOTO_CREDENTIALS["AWS_DEFAULT_REGION"],
        }

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> MotoServer:
        """Start the server and wait until it answers HTTP.

        Raises:
            RuntimeError: it exited or did not answer within ``startup_timeout``; the
                message carries the end of its output.
        """
        if self._proc is not None:
            return self
        self._log = tempfile.TemporaryFile()
        env = {**os.environ, **MOTO_CREDENTIALS}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        output = self._output()
        self.stop()
        raise RuntimeError(f"moto_server did not start on {self.endpoint_url}: {output[-2000:]}")

    def reset(self) -> None:
        """Forget every bucket, queue and object the server holds."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

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

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
