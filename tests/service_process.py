"""A `flyteagents serve` subprocess for the service tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BIN = Path(sys.executable).parent
SERVING = re.compile(r"serving on [\d.]+:(\d+) \((\w+)\)(?:, metrics on port (\d+))?")


class Service:
    """A `flyteagents serve` subprocess on free ports; stdout and stderr are kept for assertions."""

    def __init__(
        self,
        tmp: Path,
        modules: str,
        cwd: Path = TESTS,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        port: int = 0,
    ) -> None:
        self.stderr_path = tmp / f"serve-{time.monotonic_ns()}.log"
        self.stderr = open(self.stderr_path, "w")
        command = [str(BIN / "flyteagents"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        if "--workers" not in args:
            command += ["--workers", "1"]  # one process, whatever this machine's CPUs: the tests look inside it
        self.proc = subprocess.Popen(
            [*command, "--metrics-port", "0", *args],
            cwd=cwd,
            env={**os.environ, "FLYTEAGENTS_GRACE_PERIOD": "10", **(env or {}), "FLYTEAGENTS_MODULES": modules},
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.stdout: list[str] = []

    def ready(self) -> Service:
        """Wait for the "serving on" line and read the bound ports from it."""
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"serve exited ({self.proc.poll()}): {self.log()}")
            self.stdout.append(line)
            match = SERVING.search(line)
            if match:
                self.port, self.metrics_port = int(match[1]), int(match[3])
                return self
        raise AssertionError(f"serve did not start: {self.log()}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss(self) -> int:
        """The server's resident memory, in bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]

    def log(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.stderr.close()


def counter(metrics_text: str, task_type: str, operation: str, code: str = "OK") -> float:
    pattern = (
        rf'flyteagents_requests_total\{{code="{code}",operation="{operation}",task_type="{task_type}"\}} ([\d.e+]+)'
    )
    match = re.search(pattern, metrics_text)
    return float(match[1]) if match else 0.0
