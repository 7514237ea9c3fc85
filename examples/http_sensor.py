"""Wait for an HTTP endpoint to report a job done, then use its answer.

    python http_sensor.py                         # a local stand-in API that comes up late
    python http_sensor.py https://api.example.com/jobs/42

The sensor asks the URL every ``poke_interval`` seconds, backing off (doubling the wait up to
``max_poke_interval``), with a bearer token read from the secret ``jobs-api-token``
(``FLYTEAGENTS_SECRET_JOBS_API_TOKEN`` here). A 503 or a server that is not up yet means "not
yet"; a 200 whose body says ``"state": "done"`` ends it, and the next task reads the body.
Each wait shows the poke count, the last error and the next poke.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flytekit import task, workflow

from flyteagents.sensor import HTTPSensor

job_done = HTTPSensor(
    name="job_done",
    bearer_token_secret="jobs-api-token",
    body_contains='"state": "done"',
    poke_interval=0.2,
    backoff=2.0,
    max_poke_interval=1.0,
    max_consecutive_errors=20,
    timeout=120,
)


@task
def rows_written(body: str) -> int:
    return int(json.loads(body)["rows"])


@workflow
def wf(url: str) -> int:
    answer = job_done(url=url)
    return rows_written(body=answer.body)


class _JobsApi(BaseHTTPRequestHandler):
    """A stand-in jobs API: 401 without the token, 503 while busy, then the finished job."""

    polls = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer demo-token":
            status, body = 401, b"{}"
        else:
            _JobsApi.polls += 1
            status = 503 if _JobsApi.polls < 3 else 200
            body = b'{"state": "done", "rows": 3}' if status == 200 else b'{"state": "running"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve_late(server: ThreadingHTTPServer) -> None:
    time.sleep(0.5)  # the API comes up after the sensor started asking
    server.server_activate()
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        url = sys.argv[1]
    else:
        os.environ.setdefault("FLYTEAGENTS_SECRET_JOBS_API_TOKEN", "demo-token")
        api = ThreadingHTTPServer(("127.0.0.1", 0), _JobsApi, bind_and_activate=False)
        api.server_bind()
        threading.Thread(target=_serve_late, args=(api,), daemon=True).start()
        url = f"http://127.0.0.1:{api.server_address[1]}/jobs/42"
    print(f"rows: {wf(url=url)}")
