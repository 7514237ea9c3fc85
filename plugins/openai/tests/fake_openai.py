"""A small HTTP server speaking OpenAI's chat completions, files and batches endpoints.

It lets the real ``openai`` client (and flytekit's connectors) run against loopback:

    python plugins/openai/tests/fake_openai.py [--port 8001] [--key sk-test]

Behaviour is chosen by the request, so concurrent callers do not interfere:
- chat completions answer ``echo: <user message>`` (``(<system prompt>) `` in front when
  one is sent); the model ``fail-429`` gets a rate limit, ``quota`` an insufficient_quota
  429, ``fail-500`` a server error, ``slow-<seconds>`` a late answer;
- an unknown API key gets a 401 whose message echoes the key in full (OpenAI itself
  echoes part of it), so callers must keep it out of their logs;
- a batch moves validating -> in_progress -> finalizing -> completed, one step per
  retrieve; a batch whose metadata has ``hold=true`` stays in_progress until cancelled,
  then is cancelling for one retrieve and cancelled after; an input file with a line
  that is not JSON fails the batch; requests whose model is ``fail-400`` land in the
  error file;
- ``inject(status, path_prefix, count)`` makes the next matching requests fail;
- ``fastapi=True`` answers as FastAPI-based servers (llama-cpp-python, many proxies) do:
  errors as ``{"detail": "<text>"}``, and a path outside ``/v1/`` is ``404 {"detail": "Not Found"}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAI"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        outside = not path.startswith("/v1/")
        if not outside:
            path = path[3:]
        fake.record(method, path, dict(self.headers.items()), self.client_address[1], body)
        if fake.fastapi and outside:
            status, payload = 404, {"detail": "Not Found"}
        else:
            status, payload = fake.handle(method, path, dict(self.headers.items()), body)
        if fake.fastapi and status >= 400 and isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            payload = {"detail": payload["error"]["message"]}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        ctype = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{next(fake.ids)}")
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 resets bursts of new connections
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timed out) closed its socket before the answer: not an error here.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _error(status: int, message: str, type_: str, code: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": type_, "param": None, "code": code}}


class FakeOpenAI:
    """The fake OpenAI API, served from a thread on 127.0.0.1.

    Args:
        api_keys: the keys it accepts.
        port: 0 picks a free port.
        record: keep every request in ``requests``.
        fastapi: answer errors and unknown paths as a FastAPI server does (``detail``).
        tls: (certificate, key) PEM paths: serve https, as ``https://localhost:<port>/v1``.
    """

    def __init__(
        self,
        api_keys: tuple[str, ...] = ("sk-test",),
        port: int = 0,
        record: bool = True,
        fastapi: bool = False,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.api_keys = set(api_keys)
        self.fastapi = fastapi
        self.ids = itertools.count(1)
        self.record_requests = record
        self.requests: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._faults: list[list[Any]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None
        self._tls = tls is not None
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            # Handshake in the connection's thread, not in accept().
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )

    @property
    def base_url(self) -> str:
        """The URL to hand the client (``.../v1``)."""
        host, port = self._server.server_address[:2]
        if self._tls:
            return f"https://localhost:{port}/v1"
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, status: int, path_prefix: str = "/", count: int = 1, code: str | None = None) -> None:
        """Fail the next ``count`` requests whose path starts with ``path_prefix`` with ``status``."""
        with self._lock:
            self._faults.append([path_prefix, status, count, code])

    def record(self, method: str, path: str, headers: dict[str, str], port: int, body: bytes) -> None:
        """Keep a request: method, path, headers (lower-case names), client port, JSON body."""
        if self.record_requests:
            try:
                data = json.loads(body) if body else None
            except ValueError:
                data = None
            entry = {"method": method, "path": path, "port": port, "json": data}
            entry["headers"] = {k.lower(): v for k, v in headers.items()}
            with self._lock:
                self.requests.append(entry)

    def _fault(self, path: str) -> tuple[int, str | None] | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault[0]) and fault[2] > 0:
                    fault[2] -= 1
                    return fault[1], fault[3]
        return None

    # -- routing ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        key = auth.removeprefix("Bearer ").strip()
        if key not in self.api_keys:
            return _error(
                401,
                f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        fault = self._fault(path)
        if fault is not None:
            status, code = fault
            kind = "requests" if status == 429 else "server_error"
            return _error(
                status,
                f"injected error {status}",
                kind,
                code or ("rate_limit_exceeded" if status == 429 else None),
            )
        parts = path.strip("/").split("/")
        try:
            if method == "POST" and parts == ["chat", "completions"]:
                return self._chat(json.loads(body))
            if method == "POST" and parts == ["files"]:
                return self._upload(headers, body)
            if method == "GET" and len(parts) == 2 and parts[0] == "files":
                return self._lookup(self.files, parts[1], "file")
            if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
                if parts[1] not in self.contents:
                    return _error(404, f"No such File object: {parts[1]}", "invalid_request_error")
                return 200, self.contents[parts[1]]
            if method == "POST" and parts == ["batches"]:
                return self._create_batch(json.loads(body))
            if method == "GET" and parts == ["batches"]:
                with self._lock:
                    data = sorted(self.batches.values(), key=lambda b: -b["created_at"])
                return 200, {"object": "list", "data": data, "has_more": False}
            if method == "GET" and len(parts) == 2 and parts[0] == "batches":
                return self._retrieve_batch(parts[1])
            if method == "POST" and len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
                return self._cancel_batch(parts[1])
        except (ValueError, KeyError) as exc:
            return _error(400, f"bad request: {exc}", "invalid_request_error")
        return _error(404, f"Invalid URL ({method} /v1{path})", "invalid_request_error")

    # -- chat ------------------------------------------------------------------------------

    def _completion(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = request.get("model")
        if not model:
            return _error(400, "you must provide a model parameter", "invalid_request_error")
        if model == "fail-429":
            return _error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded")
        if model == "quota":
            return _error(429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota")
        if model == "fail-500":
            return _error(500, "The server had an error while processing your request", "server_error")
        if model == "fail-400":
            return _error(400, f"The model `{model}` does not exist", "invalid_request_error", "model_not_found")
        if model.startswith("slow-"):
            time.sleep(float(model[5:]))
        messages = request.get("messages") or []
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        system = next((m["content"] for m in messages if m.get("role") == "system"), None)
        content = (f"({system}) " if system else "") + f"echo: {user}"
        n = next(self.ids)
        return 200, {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": len(user.split()),
                "completion_tokens": len(content.split()),
                "total_tokens": 0,
            },
        }

    def _chat(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._completion(request)

    # -- files -----------------------------------------------------------------------------

    def _upload(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        ctype = next(v for k, v in headers.items() if k.lower() == "content-type")
        msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
        fields: dict[str, Any] = {}
        filename = "upload"
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = part.get_payload(decode=True)
            if name == "file":
                filename = str(part.get_filename() or filename)
        if "file" not in fields or "purpose" not in fields:
            return _error(400, "file and purpose are required", "invalid_request_error")
        return 200, self._store_file(fields["file"], filename, fields["purpose"].decode())

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{next(self.ids)}"
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        with self._lock:
            self.files[file_id] = obj
            self.contents[file_id] = content
        return obj

    def _lookup(self, table: dict[str, dict[str, Any]], key: str, kind: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            obj = table.get(key)
        if obj is None:
            return _error(404, f"No {kind} found with id '{key}'.", "invalid_request_error")
        return 200, obj

    # -- batches ---------------------------------------------------------------------------

    def _create_batch(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        input_file_id = request["input_file_id"]
        if input_file_id not in self.files:
            return _error(400, f"Invalid 'input_file_id': '{input_file_id}'.", "invalid_request_error")
        if request.get("completion_window") != "24h":
            return _error(400, "completion_window must be 24h", "invalid_request_error")
        batch_id = f"batch_{next(self.ids)}"
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": request["endpoint"],
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": time.time_ns() // 1000,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": request.get("metadata") or {},
            "_cancel_seen": False,
        }
        with self._lock:
            self.batches[batch_id] = batch
        return 200, self._public(batch)

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if not k.startswith("_")}
        out["created_at"] = int(batch["created_at"] // 1_000_000)
        return out

    def _retrieve_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self.batches.get(batch_id)
        if batch is None:
            return _error(404, f"No batch found with id '{batch_id}'.", "invalid_request_error")
        with self._lock:
            self._advance(batch)
            return 200, self._public(batch)

    def _advance(self, batch: dict[str, Any]) -> None:
        status = batch["status"]
        if status == "cancelling":
            if batch["_cancel_seen"]:
                batch["status"] = "cancelled"
            batch["_cancel_seen"] = True
        elif status == "validating":
            lines = self.contents[batch["input_file_id"]].decode().splitlines()
            for n, line in enumerate(lines, 1):
                try:
                    json.loads(line)
                except ValueError:
                    batch["status"] = "failed"
                    batch["errors"] = {
                        "object": "list",
                        "data": [
                            {
                                "code": "invalid_json_line",
                                "message": f"Line {n} is not valid JSON.",
                                "line": n,
                            }
                        ],
                    }
                    return
            batch["status"] = "in_progress"
            batch["request_counts"]["total"] = len([line for line in lines if line.strip()])
        elif status == "in_progress" and batch["metadata"].get("hold") != "true":
            batch["status"] = "finalizing"
        elif status == "finalizing":
            self._run(batch)
            batch["status"] = "completed"

    def _run(self, batch: dict[str, Any]) -> None:
        ok, failed = [], []
        for line in self.contents[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            status, body = self._completion(item.get("body") or {})
            rid = f"batch_req_{next(self.ids)}"
            if status == 200:
                response = {"status_code": 200, "request_id": rid, "body": body}
                ok.append({"id": rid, "custom_id": item.get("custom_id"), "response": response, "error": None})
            else:
                failed.append({"id": rid, "custom_id": item.get("custom_id"), "response": None, "error": body["error"]})
        counts = batch["request_counts"]
        counts.update(completed=len(ok), failed=len(failed))
        if ok:
            data = "".join(json.dumps(x) + "\n" for x in ok).encode()
            batch["output_file_id"] = self._store_file_locked(data, f"{batch['id']}_output.jsonl")
        if failed:
            data = "".join(json.dumps(x) + "\n" for x in failed).encode()
            batch["error_file_id"] = self._store_file_locked(data, f"{batch['id']}_error.jsonl")

    def _store_file_locked(self, content: bytes, filename: str) -> str:
        file_id = f"file-{next(self.ids)}"
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": "batch_output",
            "status": "processed",
        }
        self.contents[file_id] = content
        return file_id

    def _cancel_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return _error(404, f"No batch found with id '{batch_id}'.", "invalid_request_error")
            if batch["status"] in ("completed", "failed", "expired", "cancelled"):
                return _error(409, f"Cannot cancel a batch with status '{batch['status']}'.", "invalid_request_error")
            batch["status"] = "cancelling"
            return 200, self._public(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", action="append", help="an accepted API key (default sk-test)")
    parser.add_argument("--no-record", action="store_true", help="do not keep every request in memory")
    args = parser.parse_args()
    server = FakeOpenAI(tuple(args.key or ["sk-test"]), port=args.port, record=not args.no_record)
    print(server.base_url, flush=True)
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._server.server_close()


if __name__ == "__main__":
    main()
