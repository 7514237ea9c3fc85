"""MotoServer: a real ``moto_server`` process (S3, SQS, ...) on a free loopback port, for tests."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from ._process import ServerProcess

__all__ = ["MotoServer"]

#: Fake credentials moto accepts; no real account is ever involved.
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer(ServerProcess):
    """Starts ``moto_server`` as a subprocess on 127.0.0.1 and stops it afterwards.

    Use it as a context manager (or call ``start``/``stop``); point clients at
    ``endpoint_url`` with the fake credentials in ``credentials``/``env``.

    Example:
        ```python
        with MotoServer() as moto:
            s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, **moto.credentials)
        ```
    """

    name = "moto_server"
    poll_interval = 0.05

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

    def command(self) -> list[str]:
        """``python -m moto.server`` on this host and port."""
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def environment(self) -> dict[str, str]:
        """This process's environment with moto's fake credentials."""
        return {**os.environ, **MOTO_CREDENTIALS}

    def ready(self) -> bool:
        """Whether the server answers HTTP."""
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=1):
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def reset(self) -> None:
        """Forget every bucket, queue and object the server holds."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass
