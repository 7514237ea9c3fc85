"""A local Databricks workspace speaking the Jobs API 2.1 the agent uses, for tests, examples and benchmarks.

Endpoints: ``POST /api/2.1/jobs/runs/submit`` (honours ``idempotency_token``), ``GET
/api/2.1/jobs/runs/get``, ``POST /api/2.1/jobs/runs/cancel``, ``GET /api/2.1/jobs/runs/get-output``
and ``POST /oidc/v1/token`` (OAuth M2M client credentials). Requests need
``Authorization: Bearer <token>`` with an accepted token.

A submitted run goes PENDING -> QUEUED -> RUNNING -> TERMINATING -> TERMINATED. A
``spark_python_task`` really runs: its parameters (flytekit's rendered ``pyflyte-execute ...``
container args) are executed as a subprocess with the cluster's ``spark_env_vars``, as the
task's image would run them, so it reads ``inputs.pb`` and writes ``outputs.pb``. Other tasks
(notebooks) and runs submitted while ``execute`` is off just run for ``run_seconds``.

Test control (no auth): ``POST /_test/faults`` ``{"path": "runs/get", "status": 503, "count": 2}``
answers the next ``count`` matching requests with that status; ``GET /_test/state`` returns the
runs, their submitted payloads and state histories, and request counts.

Run standalone: ``python jobs_server.py [--port 0] [--token T] [--tls-cert C --tls-key K]
[--no-execute] [--run-seconds S] [--code-path DIR]``; it prints ``port=<n>`` when ready.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API = "/api/2.1/jobs"


class Run:
    """One submitted run and its single task."""

    def __init__(self, run_id: int, task_run_id: int, payload: dict[str, Any]) -> None:
        self.run_id = run_id
        self.task_run_id = task_run_id
        self.payload = payload
        self.life_cycle_state = "PENDING"
        self.result_state: str | None = None
        self.state_message = "Waiting for cluster"
        self.history: list[str] = ["PENDING"]
        self.error: str | None = None
        self.error_trace: str | None = None
        self.cancelled = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_time = int(time.time() * 1000)

    def set(self, life: str, message: str = "", result: str | None = None) -> None:
        self.life_cycle_state, self.state_message, self.result_state = life, message, result
        self.history.append(life if result is None else f"{life}:{result}")

    def task(self) -> dict[str, Any]:
        tasks = self.payload.get("tasks")
        return tasks[0] if tasks else self.payload

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "life_cycle_state": self.life_cycle_state,
            "state_message": self.state_message,
        }
        if self.result_state is not None:
            state["result_state"] = self.result_state
            state["user_cancelled_or_timedout"] = self.result_state in ("CANCELED", "TIMEDOUT")
        return state


class Workspace:
    """The server's state: runs, idempotency tokens, injected faults, request counts."""

    def __init__(
        self,
        tokens: set[str],
        *,
        execute: bool = True,
        run_seconds: float = 0.2,
        pending_seconds: float = 0.05,
        code_path: list[str] | None = None,
        oauth_clients: dict[str, str] | None = None,
    ) -> None:
        self.tokens = set(tokens)
        self.execute = execute
        self.run_seconds = run_seconds
        self.pending_seconds = pending_seconds
        self.code_path = code_path or []
        self.oauth_clients = oauth_clients or {}
        self.lock = threading.Lock()
        self.runs: dict[int, Run] = {}
        self.by_task_run: dict[int, Run] = {}
        self.idempotency: dict[str, int] = {}
        self.faults: list[dict[str, Any]] = []
        self.requests: dict[str, int] = {}
        self.submit_count = 0
        self.ids = itertools.count(1001)
        self.host = ""
        self.scheme = "http"

    # run life cycle ---------------------------------------------------------------
    def submit(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        token = payload.get("idempotency_token")
        if token is not None and (not isinstance(token, str) or len(token) > 64):
            return 400, _error("INVALID_PARAMETER_VALUE", "idempotency_token must be a string of at most 64 chars")
        tasks = payload.get("tasks")
        task = tasks[0] if isinstance(tasks, list) and tasks else payload
        if not any(k in task for k in ("spark_python_task", "notebook_task")):
            return 400, _error("INVALID_PARAMETER_VALUE", "a task needs spark_python_task or notebook_task")
        if not any(k in task for k in ("new_cluster", "existing_cluster_id", "environment_key")):
            return 400, _error(
                "INVALID_PARAMETER_VALUE", "a task needs new_cluster, existing_cluster_id or an environment"
            )
        with self.lock:
            self.submit_count += 1
            if token is not None and token in self.idempotency:
                return 200, {"run_id": self.idempotency[token]}
            run = Run(next(self.ids), next(self.ids), payload)
            self.runs[run.run_id] = run
            self.by_task_run[run.task_run_id] = run
            if token is not None:
                self.idempotency[token] = run.run_id
        threading.Thread(target=self._drive, args=(run,), daemon=True, name=f"run-{run.run_id}").start()
        return 200, {"run_id": run.run_id}

    def _drive(self, run: Run) -> None:
        if run.cancelled.wait(self.pending_seconds):
            return self._finish(run, "CANCELED", "Run cancelled by user")
        run.set("QUEUED", "Waiting for a cluster slot")
        if run.cancelled.wait(self.pending_seconds):
            return self._finish(run, "CANCELED", "Run cancelled by user")
        run.set("RUNNING", "In run")
        timeout = run.payload.get("timeout_seconds") or None
        task = run.task()
        if self.execute and "spark_python_task" in task:
            result, message = self._execute(run, task, timeout)
        else:
            limit = min(self.run_seconds, timeout) if timeout else self.run_seconds
            cancelled = run.cancelled.wait(None if limit == float("inf") else limit)
            result, message = ("CANCELED", "Run cancelled by user") if cancelled else ("SUCCESS", "")
            if not cancelled and timeout and self.run_seconds > timeout:
                result, message = "TIMEDOUT", f"Run timed out after {timeout} seconds"
        self._finish(run, result, message)

    def _execute(self, run: Run, task: dict[str, Any], timeout: float | None) -> tuple[str, str]:
        params = list(task["spark_python_task"].get("parameters") or [])
        if not params:
            return "FAILED", "spark_python_task has no parameters"
        # The image's entrypoint resolves flytekit's console scripts; here they come from this venv.
        exe = shutil.which(params[0], path=os.path.dirname(sys.executable)) or shutil.which(params[0])
        if exe is None:
            return "FAILED", f"{params[0]}: command not found"
        cluster = task.get("new_cluster") or {}
        env = {**os.environ, **{str(k): str(v) for k, v in (cluster.get("spark_env_vars") or {}).items()}}
        for spec in run.payload.get("environments") or []:
            env.update({str(k): str(v) for k, v in spec.get("spec", {}).get("environment_vars", {}).items()})
        if self.code_path:
            env["PYTHONPATH"] = os.pathsep.join([*self.code_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        run.proc = subprocess.Popen([exe, *params[1:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout if timeout else None
        while run.proc.poll() is None:
            if run.cancelled.wait(0.02):
                run.proc.kill()
                run.proc.communicate()
                return "CANCELED", "Run cancelled by user"
            if deadline is not None and time.monotonic() > deadline:
                run.proc.kill()
                run.proc.communicate()
                return "TIMEDOUT", f"Run timed out after {timeout} seconds"
        output = run.proc.communicate()[0].decode(errors="replace")
        if run.proc.returncode == 0:
            return "SUCCESS", ""
        lines = [line for line in output.strip().splitlines() if line.strip()]
        run.error = _last_error(lines) or f"exit code {run.proc.returncode}"
        run.error_trace = "\n".join(lines[-40:])
        return "FAILED", "Workload failed, see run output for details"

    def _finish(self, run: Run, result: str, message: str) -> None:
        run.set("TERMINATING", message)
        time.sleep(0.01)
        run.set("TERMINATED", message, result)

    def cancel(self, run_id: Any) -> tuple[int, dict[str, Any]]:
        run = self.runs.get(_as_int(run_id))
        if run is None:
            return 400, _error("INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        if run.life_cycle_state in ("TERMINATED", "SKIPPED", "INTERNAL_ERROR"):
            # As Databricks (and the semblance mock) answer for a run that has finished.
            return 400, _error("INVALID_STATE", "Run is not active")
        run.cancelled.set()
        return 200, {}

    def get(self, run_id: Any) -> tuple[int, dict[str, Any]]:
        run = self.runs.get(_as_int(run_id))
        if run is None:
            return 400, _error("INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        url = f"{self.scheme}://{self.host}/?o=1#job/{run.run_id}/run/{run.run_id}"
        task_state = run.state()
        task = {
            "run_id": run.task_run_id,
            "task_key": run.task().get("task_key", "task"),
            "state": task_state,
        }
        return 200, {
            "job_id": run.run_id,
            "run_id": run.run_id,
            "run_name": run.payload.get("run_name", "Untitled"),
            "number_in_job": run.run_id,
            "start_time": run.start_time,
            "state": run.state(),
            "run_page_url": url,
            "run_type": "SUBMIT_RUN",
            "tasks": [task],
        }

    def get_output(self, run_id: Any) -> tuple[int, dict[str, Any]]:
        run = self.by_task_run.get(_as_int(run_id))
        if run is None:
            if _as_int(run_id) in self.runs:
                return 400, _error(
                    "INVALID_PARAMETER_VALUE", "Retrieving the output of a multi-task run is not supported"
                )
            return 400, _error("INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        body: dict[str, Any] = {"metadata": {"run_id": run.task_run_id, "state": run.state()}}
        if run.error:
            body["error"] = run.error
            body["error_trace"] = run.error_trace
        return 200, body

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "runs": {
                    str(r.run_id): {"payload": r.payload, "history": r.history, "state": r.state()}
                    for r in self.runs.values()
                },
                "requests": dict(self.requests),
                "submit_count": self.submit_count,
            }

    def take_fault(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            for fault in self.faults:
                if fault["path"] in path and fault["count"] > 0:
                    fault["count"] -= 1
                    return fault
        return None

    def close(self) -> None:
        for run in list(self.runs.values()):
            run.cancelled.set()
            if run.proc is not None and run.proc.poll() is None:
                run.proc.kill()


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error_code": code, "message": message}


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt)):\s")


def _last_error(lines: list[str]) -> str | None:
    # What Databricks shows as a run's error: the last "SomeError: message" line of the traceback.
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line.strip()
    return lines[-1].strip() if lines else None


class Handler(BaseHTTPRequestHandler):
    server: JobsServer
    protocol_version = "HTTP/1.1"
    # Small answers must not wait for the client's delayed ACK (Nagle): send at once.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read state, not logs
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # One write for headers and body, as production servers answer: one segment, one client wake-up.
        self._headers_buffer.append(b"\r\n")
        self.wfile.write(b"".join(self._headers_buffer) + data)
        self._headers_buffer = []

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            return dict(urllib.parse.parse_qsl(raw.decode()))
        return json.loads(raw) if raw else {}

    def _handle(self, method: str) -> None:
        ws = self.server.workspace
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            body = self._body() if method == "POST" else {}
        except ValueError:
            return self._send(400, _error("MALFORMED_REQUEST", "body is not JSON"))
        if path == "/_test/faults":
            with ws.lock:
                ws.faults.append({"count": 1, "retry_after": None, **body})
            return self._send(200, {})
        if path == "/_test/state":
            return self._send(200, ws.snapshot())
        with ws.lock:
            key = f"{method} {path}"
            ws.requests[key] = ws.requests.get(key, 0) + 1
        fault = ws.take_fault(path)
        if fault is not None:
            headers = {"Retry-After": str(fault["retry_after"])} if fault.get("retry_after") is not None else None
            return self._send(fault["status"], _error("TEMPORARILY_UNAVAILABLE", "injected fault"), headers)
        if path == "/oidc/v1/token" and method == "POST":
            return self._token(body)
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self._send(401, _error("UNAUTHENTICATED", "missing bearer token"))
        if auth[7:] not in ws.tokens:
            return self._send(403, _error("PERMISSION_DENIED", "invalid access token"))
        route = (method, path.removeprefix(API))
        if route == ("POST", "/runs/submit"):
            return self._send(*ws.submit(body))
        if route == ("GET", "/runs/get"):
            return self._send(*ws.get(query.get("run_id")))
        if route == ("POST", "/runs/cancel"):
            return self._send(*ws.cancel(body.get("run_id")))
        if route == ("GET", "/runs/get-output"):
            return self._send(*ws.get_output(query.get("run_id")))
        return self._send(404, _error("ENDPOINT_NOT_FOUND", f"no API found for {method} {path}"))

    def _token(self, form: dict[str, str]) -> None:
        ws = self.server.workspace
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials" or not client_id or ws.oauth_clients.get(client_id) != secret:
            return self._send(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
        token = f"oauth-{client_id}-{os.urandom(6).hex()}"
        with ws.lock:
            ws.tokens.add(token)
        return self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": "all-apis"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


class JobsServer(ThreadingHTTPServer):
    """The HTTP(S) server; ``serve_in_thread`` starts it, ``close`` stops it and its runs."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs under a burst of new connections (1 s retransmit).
    request_queue_size = 256

    def __init__(self, workspace: Workspace, port: int = 0, tls: tuple[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.workspace = workspace
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            # Handshake on first read, in the connection's thread, not serially in accept().
            self.socket = ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
            self.scheme = "https"
        workspace.scheme = self.scheme
        workspace.host = f"127.0.0.1:{self.server_address[1]}"
        self._thread: threading.Thread | None = None

    @property
    def instance(self) -> str:
        """The workspace address as the agent takes it: ``http://127.0.0.1:<port>``."""
        return f"{self.scheme}://{self.workspace.host}"

    def serve_in_thread(self) -> JobsServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.workspace.close()
        self.shutdown()
        self.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", default=None, help="accepted bearer token (repeatable)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--no-execute", action="store_true", help="do not run spark_python_task commands")
    parser.add_argument("--run-seconds", type=float, default=0.2, help="how long non-executed runs last (inf ok)")
    parser.add_argument("--code-path", action="append", default=[], help="put on PYTHONPATH of executed runs")
    args = parser.parse_args()
    ws = Workspace(
        set(args.token or ["dapi-local-token"]),
        execute=not args.no_execute,
        run_seconds=args.run_seconds,
        code_path=[os.path.abspath(p) for p in args.code_path],
    )
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server = JobsServer(ws, args.port, tls)
    print(f"port={server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        ws.close()
        server.server_close()


if __name__ == "__main__":
    main()
