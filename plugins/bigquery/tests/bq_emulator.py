"""A local BigQuery v2 REST server backed by DuckDB, for tests, the example and the benchmark.

It speaks enough of the documented protocol for the real ``google-cloud-bigquery`` client:
jobs.insert (caller-chosen job ids, 409 on a duplicate), jobs.get (PENDING -> RUNNING ->
DONE, one step per poll), jobs.cancel, jobs.getQueryResults, tabledata.list, tables.get,
and an OAuth2 token endpoint so real service-account credentials work offline. Queries
really run on DuckDB: BigQuery datasets are DuckDB schemas, ``@name`` parameters are
bound as DuckDB named parameters.

Run it alone with ``python plugins/bigquery/tests/bq_emulator.py --port 9050``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb

API = "/bigquery/v2"
_CANCELLED = {"reason": "stopped", "message": "Job execution was cancelled: User requested cancellation"}


class ApiError(Exception):
    """An error answered in BigQuery's JSON error format."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        status = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
                "status": status.get(self.code, "UNAVAILABLE"),
            }
        }


@dataclass
class Job:
    project: str
    job_id: str
    location: str
    configuration: dict[str, Any]
    created_ms: int
    polls: int = 0
    state: str = "PENDING"
    cancel_requested: bool = False
    error: dict[str, str] | None = None
    destination: dict[str, str] | None = None
    statistics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fault:
    method: str
    path_contains: str
    status: int
    times: int
    reason: str | None = None


class BigQueryEmulator:
    """The server's state and SQL engine; ``start()`` serves it on 127.0.0.1.

    Args:
        pending_polls: jobs.get / getQueryResults calls a new job answers PENDING.
        running_polls: further calls it answers RUNNING before it runs and is DONE.
        require_auth: answer 401 to API calls without a token this server issued.
    """

    def __init__(self, pending_polls: int = 1, running_polls: int = 1, require_auth: bool = True) -> None:
        self.pending_polls = pending_polls
        self.running_polls = running_polls
        self.require_auth = require_auth
        self.db = duckdb.connect()
        self.jobs: dict[tuple[str, str], Job] = {}
        self.requests: list[tuple[str, str]] = []
        self.tokens: set[str] = set()
        self.public_keys: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- test controls -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's base URL, for ``BIGQUERY_EMULATOR_HOST`` or ``api_endpoint``."""
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        if getattr(self, "_tls", False):
            return f"https://localhost:{port}"
        return f"http://{host}:{port}"

    def sql(self, statement: str) -> None:
        """Run setup SQL (``CREATE SCHEMA demo; CREATE TABLE demo.t AS ...``) on the database."""
        with self._lock:
            self.db.execute(statement)

    def fail_next(
        self, method: str, path_contains: str, status: int = 503, times: int = 1, reason: str | None = None
    ) -> None:
        """Answer the next ``times`` matching requests with an HTTP error ``status`` (and ``reason``)."""
        with self._lock:
            self._faults.append(Fault(method, path_contains, status, times, reason))

    def count(self, method: str, path_contains: str = "") -> int:
        """How many requests with ``method`` and a path containing ``path_contains`` arrived."""
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and path_contains in p)

    def service_account_info(
        self, project: str = "test-project", universe_domain: str | None = "emulator.local"
    ) -> dict[str, str]:
        """A service-account key for this server (a real RSA key, made now).

        In a universe other than googleapis.com, google-auth signs its own JWTs, which this
        server verifies with the key's public half, and asks no Google host anything. With
        ``universe_domain=None`` the key is for googleapis.com and exchanges a JWT for a token
        at this server's token_uri; google-auth then also looks up the account's access
        boundary at iamcredentials.googleapis.com in the background, which fails offline.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        key_id = uuid.uuid4().hex
        with self._lock:
            self.public_keys[key_id] = public
        info = {
            "type": "service_account",
            "project_id": project,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": f"agent@{project}.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"{self.url}/token",
        }
        if universe_domain:
            info["universe_domain"] = universe_domain
        return info

    def start(self, port: int = 0, tls: tuple[str, str] | None = None) -> BigQueryEmulator:
        """Serve on 127.0.0.1:``port`` (0 picks a free one) in a daemon thread; https with ``tls`` (cert, key)."""
        emulator = self

        class Handler(_Handler):
            server_state = emulator

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._tls = tls is not None
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bq-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end kept-alive connections and close the database."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            # Handler threads wait on kept-alive connections: end them so none outlives the server.
            with self._lock:
                connections = list(self._connections)
            for conn in connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            deadline = time.monotonic() + 5
            while self._connections and time.monotonic() < deadline:
                time.sleep(0.01)
        if self._thread is not None:
            self._thread.join(5)
        self.db.close()

    def __enter__(self) -> BigQueryEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request dispatch ----------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Any:
        with self._lock:
            self.requests.append((method, path))
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and fault.path_contains in path:
                    fault.times -= 1
                    reason = fault.reason or ("rateLimitExceeded" if fault.status == 429 else "backendError")
                    raise ApiError(fault.status, reason, f"injected fault {fault.status}")
        if path == "/token" and method == "POST":
            return self._token(body)
        if not path.startswith(API + "/projects/"):
            raise ApiError(404, "notFound", f"Not found: URL {path}")
        if self.require_auth:
            if not self._authorized(headers.get("Authorization", "")):
                raise ApiError(401, "authError", "Request is missing required authentication credential")
        parts = path[len(API) + 1 :].split("/")  # projects/{p}/...
        project = parts[1]
        rest = parts[2:]
        payload = json.loads(body) if body else {}
        with self._lock:
            if rest == ["jobs"] and method == "POST":
                return self._insert(project, payload)
            if len(rest) == 2 and rest[0] == "jobs" and method == "GET":
                return self._job_resource(self._poll(project, rest[1], query))
            if len(rest) == 3 and rest[0] == "jobs" and rest[2] == "cancel" and method == "POST":
                return self._cancel(project, rest[1], query)
            if len(rest) == 2 and rest[0] == "queries" and method == "GET":
                return self._query_results(project, rest[1], query)
            if len(rest) == 4 and rest[0] == "datasets" and rest[2] == "tables" and method == "GET":
                return self._table(project, rest[1], rest[3])
            if len(rest) == 5 and rest[0] == "datasets" and rest[4] == "data" and method == "GET":
                return self._table_data(project, rest[1], rest[3], query)
        raise ApiError(404, "notFound", f"Not found: {method} {path}")

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Bearer "):
            return False
        token = header[7:]
        with self._lock:
            if token in self.tokens:
                return True
            keys = dict(self.public_keys)
        try:  # a self-signed JWT: check its signature against the keys this server made
            from google.auth import jwt

            jwt.decode(token, certs=keys, verify=True)
        except Exception:
            return False
        return True

    def _token(self, body: bytes) -> dict[str, Any]:
        form = parse_qs(body.decode())
        if not form.get("assertion") and not form.get("refresh_token"):
            raise ApiError(400, "invalid_grant", "no assertion")
        token = f"tok-{uuid.uuid4().hex}"
        self.tokens.add(token)
        return {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    # -- jobs ----------------------------------------------------------------------------------

    def _insert(self, project: str, payload: dict[str, Any]) -> dict[str, Any]:
        ref = payload.get("jobReference") or {}
        job_id = ref.get("jobId") or f"job_{uuid.uuid4().hex}"
        location = ref.get("location") or "US"
        if (project, job_id) in self.jobs:
            raise ApiError(409, "duplicate", f"Already Exists: Job {project}:{location}.{job_id}")
        config = payload.get("configuration") or {}
        if "query" not in config or not config["query"].get("query"):
            raise ApiError(400, "invalid", "Only query jobs with a query are supported by this server")
        job = Job(project, job_id, location, config, created_ms=_now_ms())
        self.jobs[(project, job_id)] = job
        if self.pending_polls + self.running_polls == 0:
            self._run(job)
        return self._job_resource(job)

    def _find(self, project: str, job_id: str, query: dict[str, str]) -> Job:
        job = self.jobs.get((project, job_id))
        location = query.get("location")
        if job is None or (location and location.lower() != job.location.lower()):
            raise ApiError(404, "notFound", f"Not found: Job {project}:{location or 'US'}.{job_id}")
        return job

    def _poll(self, project: str, job_id: str, query: dict[str, str]) -> Job:
        job = self._find(project, job_id, query)
        if job.state == "DONE":
            return job
        job.polls += 1
        if job.cancel_requested:
            job.state, job.error = "DONE", dict(_CANCELLED)
            job.statistics["endTime"] = str(_now_ms())
        elif job.polls > self.pending_polls + self.running_polls:
            self._run(job)
        elif job.polls > self.pending_polls:
            job.state = "RUNNING"
            job.statistics.setdefault("startTime", str(_now_ms()))
        return job

    def _cancel(self, project: str, job_id: str, query: dict[str, str]) -> dict[str, Any]:
        job = self._find(project, job_id, query)
        if job.state != "DONE":
            job.cancel_requested = True  # like BigQuery, the job stops on its next step
        return {"kind": "bigquery#jobCancelResponse", "job": self._job_resource(job)}

    def _run(self, job: Job) -> None:
        qconf = job.configuration["query"]
        start = time.perf_counter()
        job.statistics.setdefault("startTime", str(_now_ms()))
        try:
            if qconf.get("useLegacySql", True):  # the REST default is legacy SQL
                raise ApiError(400, "invalidQuery", "Legacy SQL is not supported by this server")
            self._execute(job, qconf)
        except ApiError as exc:
            job.error = {"reason": exc.reason, "message": exc.message}
        except duckdb.Error as exc:
            job.error = {"reason": "invalidQuery", "message": str(exc).splitlines()[0]}
        job.state = "DONE"
        job.statistics["endTime"] = str(_now_ms())
        slot_ms = max(1, int((time.perf_counter() - start) * 1000))
        job.statistics["totalSlotMs"] = str(slot_ms)
        job.statistics.setdefault("query", {})["totalSlotMs"] = str(slot_ms)

    def _execute(self, job: Job, qconf: dict[str, Any]) -> None:
        sql = translate_sql(qconf["query"])
        params = {p["name"]: _param_value(p) for p in qconf.get("queryParameters", [])}
        cur = self.db.cursor()
        try:
            default = qconf.get("defaultDataset") or {}
            if default.get("datasetId"):
                cur.execute(f"SET search_path = '{_ident(default['datasetId'])}'")
            if not _returns_rows(sql):
                cur.execute(sql, params or None)
                self._record_stats(job, 0, "SCRIPT")
                return
            dest = qconf.get("destinationTable")
            if dest is None:
                dest = {
                    "projectId": job.project,
                    "datasetId": "_flyteagents_anon",
                    "tableId": f"anon_{uuid.uuid4().hex}",
                }
            dataset, table = _ident(dest["datasetId"]), _ident(dest["tableId"])
            target = f'"{dataset}"."{table}"'
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{dataset}"')
            exists = self._table_exists(cur, dataset, table)
            create = qconf.get("createDisposition", "CREATE_IF_NEEDED")
            write = qconf.get("writeDisposition", "WRITE_EMPTY")
            if not exists and create == "CREATE_NEVER":
                raise ApiError(404, "notFound", f"Not found: Table {dest['projectId']}:{dataset}.{table}")
            # Run into a scratch table first so a failed write leaves the destination untouched.
            scratch = f'"{dataset}"."_scratch_{uuid.uuid4().hex}"'
            cur.execute(f"CREATE TABLE {scratch} AS {sql}", params or None)
            try:
                nbytes = _estimate_bytes(cur, scratch)
                limit = qconf.get("maximumBytesBilled")
                if limit is not None and nbytes > int(limit):
                    raise ApiError(
                        400,
                        "bytesBilledLimitExceeded",
                        f"Query exceeded limit for bytes billed: {int(limit)}. {nbytes} or higher required.",
                    )
                if exists and write == "WRITE_EMPTY" and cur.execute(f"SELECT count(*) FROM {target}").fetchone()[0]:
                    raise ApiError(409, "duplicate", f"Already Exists: Table {dest['projectId']}:{dataset}.{table}")
                if exists and write == "WRITE_APPEND":
                    cur.execute(f"INSERT INTO {target} SELECT * FROM {scratch}")
                else:
                    cur.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {scratch}")
            finally:
                cur.execute(f"DROP TABLE IF EXISTS {scratch}")
            job.destination = {
                "projectId": dest.get("projectId", job.project),
                "datasetId": dataset,
                "tableId": table,
            }
            self._record_stats(job, nbytes, "SELECT")
        finally:
            cur.close()

    @staticmethod
    def _table_exists(cur: Any, dataset: str, table: str) -> bool:
        row = cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [dataset, table],
        ).fetchone()
        return bool(row[0])

    @staticmethod
    def _record_stats(job: Job, nbytes: int, statement_type: str) -> None:
        q = job.statistics.setdefault("query", {})
        q.update(
            totalBytesProcessed=str(nbytes),
            totalBytesBilled=str(nbytes),
            statementType=statement_type,
            cacheHit=False,
        )
        job.statistics["totalBytesProcessed"] = str(nbytes)

    def _job_resource(self, job: Job) -> dict[str, Any]:
        config = json.loads(json.dumps(job.configuration))
        if job.destination is not None:
            config["query"]["destinationTable"] = job.destination
        status: dict[str, Any] = {"state": job.state}
        if job.error is not None:
            status["errorResult"] = job.error
            status["errors"] = [job.error]
        stats = {"creationTime": str(job.created_ms), **job.statistics}
        return {
            "kind": "bigquery#job",
            "id": f"{job.project}:{job.location}.{job.job_id}",
            "selfLink": f"{self.url}{API}/projects/{job.project}/jobs/{job.job_id}?location={job.location}",
            "user_email": f"agent@{job.project}.iam.gserviceaccount.com",
            "jobReference": {"projectId": job.project, "jobId": job.job_id, "location": job.location},
            "configuration": config,
            "status": status,
            "statistics": stats,
        }

    def _query_results(self, project: str, job_id: str, query: dict[str, str]) -> dict[str, Any]:
        job = self._poll(project, job_id, query)
        ref = {"projectId": project, "jobId": job_id, "location": job.location}
        if job.state != "DONE":
            return {"kind": "bigquery#getQueryResultsResponse", "jobReference": ref, "jobComplete": False}
        if job.error is not None:
            raise ApiError(400, job.error["reason"], job.error["message"])
        out: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": ref,
            "jobComplete": True,
        }
        if job.destination is None:
            return {**out, "totalRows": "0", "schema": {"fields": []}}
        table = self._table(project, job.destination["datasetId"], job.destination["tableId"])
        page = self._table_data(project, job.destination["datasetId"], job.destination["tableId"], query)
        return {**out, "schema": table["schema"], **{k: v for k, v in page.items() if k != "kind"}}

    # -- tables --------------------------------------------------------------------------------

    def _schema(self, dataset: str, table: str) -> list[dict[str, Any]]:
        cur = self.db.cursor()
        try:
            if not self._table_exists(cur, dataset, table):
                raise ApiError(404, "notFound", f"Not found: Table {dataset}.{table}")
            return [_field(name, typ) for name, typ, *_ in cur.execute(f'DESCRIBE "{dataset}"."{table}"').fetchall()]
        finally:
            cur.close()

    def _table(self, project: str, dataset: str, table: str) -> dict[str, Any]:
        fields = self._schema(dataset, table)
        cur = self.db.cursor()
        try:
            rows = cur.execute(f'SELECT count(*) FROM "{dataset}"."{table}"').fetchone()[0]
            nbytes = _estimate_bytes(cur, f'"{dataset}"."{table}"')
        finally:
            cur.close()
        return {
            "kind": "bigquery#table",
            "id": f"{project}:{dataset}.{table}",
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": fields},
            "numRows": str(rows),
            "numBytes": str(nbytes),
            "type": "TABLE",
            "location": "US",
        }

    def _table_data(self, project: str, dataset: str, table: str, query: dict[str, str]) -> dict[str, Any]:
        fields = self._schema(dataset, table)
        selected = query.get("selectedFields")
        if selected:
            wanted = selected.split(",")
            fields = [f for f in fields if f["name"] in wanted]
        start = int(query.get("pageToken") or query.get("startIndex") or 0)
        limit = int(query.get("maxResults", 100_000))
        int64_ts = query.get("formatOptions.useInt64Timestamp", "").lower() == "true"
        cur = self.db.cursor()
        try:
            total = cur.execute(f'SELECT count(*) FROM "{dataset}"."{table}"').fetchone()[0]
            cols = ", ".join(f'"{f["name"]}"' for f in fields) or "1"
            rows = cur.execute(f'SELECT {cols} FROM "{dataset}"."{table}" LIMIT {limit} OFFSET {start}').fetchall()
        finally:
            cur.close()
        out: dict[str, Any] = {"kind": "bigquery#tableDataList", "totalRows": str(total)}
        if fields and limit:
            out["rows"] = [{"f": [_cell(v, f, int64_ts) for v, f in zip(row, fields, strict=True)]} for row in rows]
        if start + len(rows) < total and limit:
            out["pageToken"] = str(start + len(rows))
        return out


class _Handler(BaseHTTPRequestHandler):
    server_state: BigQueryEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold every kept-alive response back by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server_state._lock:
            self.server_state._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server_state._lock:
                self.server_state._connections.discard(self.connection)

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            code, payload = 200, self.server_state.handle(method, split.path, query, self.headers, body)
        except ApiError as exc:
            code, payload = exc.code, exc.body()
        except Exception as exc:  # a server bug: answer 500 like BigQuery's backendError
            code, payload = 500, ApiError(500, "backendError", f"{type(exc).__name__}: {exc}").body()
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


# -- SQL and value translation -----------------------------------------------------------------

_TOKENS = re.compile(r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|@\w+)")


def translate_sql(sql: str) -> str:
    """BigQuery standard SQL -> DuckDB: ``@p`` -> ``$p``, `proj.ds.t` -> "ds"."t"."""

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok.startswith("@"):
            return "$" + tok[1:]
        if tok.startswith("`"):
            parts = tok[1:-1].split(".")
            if len(parts) == 3:
                parts = parts[1:]  # one DuckDB database serves every project
            return ".".join(f'"{p}"' for p in parts)
        return tok

    sql = _TOKENS.sub(sub, sql)
    # `x IN UNNEST(@array)` has no DuckDB spelling; list_contains does the same.
    return _IN_UNNEST.sub(lambda m: f"list_contains({m.group(2)}, {m.group(1)})", sql)


_IN_UNNEST = re.compile(r"([\w.\"]+)\s+IN\s+UNNEST\s*\(\s*(\$\w+)\s*\)", re.IGNORECASE)


def _returns_rows(sql: str) -> bool:
    head = sql.lstrip().lstrip("(").split(None, 1)
    return bool(head) and head[0].upper() in {"SELECT", "WITH", "VALUES", "FROM", "TABLE"}


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ApiError(400, "invalid", f"Invalid dataset or table name {name!r}")
    return name


def _scalar(typ: str, value: Any) -> Any:
    if value is None:
        return None
    if typ in ("INT64", "INTEGER"):
        return int(value)
    if typ in ("FLOAT64", "FLOAT", "NUMERIC", "BIGNUMERIC"):
        return float(value)
    if typ in ("BOOL", "BOOLEAN"):
        return str(value).lower() == "true"
    if typ == "BYTES":
        return base64.b64decode(value)
    if typ == "DATE":
        return dt.date.fromisoformat(value)
    if typ == "DATETIME":
        return dt.datetime.fromisoformat(value.replace(" ", "T"))
    if typ == "TIMESTAMP":
        ts = dt.datetime.fromisoformat(value.replace(" ", "T").replace("Z", "+00:00"))
        return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
    if typ == "STRING":
        return str(value)
    raise ApiError(400, "invalidQuery", f"Unsupported query parameter type {typ}")


def _param_value(param: dict[str, Any]) -> Any:
    ptype = param["parameterType"]
    pvalue = param.get("parameterValue") or {}
    if ptype["type"] == "ARRAY":
        elem = ptype["arrayType"]["type"]
        return [_scalar(elem, v.get("value")) for v in pvalue.get("arrayValues", [])]
    return _scalar(ptype["type"], pvalue.get("value"))


_TYPES = [
    (r"(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT)", "INTEGER"),
    (r"(FLOAT|DOUBLE|REAL|DECIMAL.*)", "FLOAT"),  # BigQuery's 1.5 is FLOAT64; DuckDB's is DECIMAL
    (r"BOOLEAN", "BOOLEAN"),
    (r"BLOB", "BYTES"),
    (r"DATE", "DATE"),
    (r"TIMESTAMP WITH TIME ZONE", "TIMESTAMP"),
    (r"TIMESTAMP.*", "DATETIME"),
    (r"TIME", "TIME"),
]


def _field(name: str, duck_type: str) -> dict[str, Any]:
    mode = "NULLABLE"
    if duck_type.endswith("[]"):
        mode, duck_type = "REPEATED", duck_type[:-2]
    bq = next((b for pattern, b in _TYPES if re.fullmatch(pattern, duck_type)), "STRING")
    return {"name": name, "type": bq, "mode": mode}


def _cell(value: Any, fld: dict[str, Any], int64_ts: bool) -> dict[str, Any]:
    if fld["mode"] == "REPEATED":
        return {"v": [{"v": _encode(v, fld["type"], int64_ts)} for v in (value or [])]}
    return {"v": _encode(value, fld["type"], int64_ts)}


def _encode(value: Any, typ: str, int64_ts: bool) -> Any:
    if value is None:
        return None
    if typ == "BOOLEAN":
        return "true" if value else "false"
    if typ == "BYTES":
        return base64.b64encode(value).decode()
    if typ == "TIMESTAMP":
        micros = int(value.timestamp() * 1_000_000)
        return str(micros) if int64_ts else repr(micros / 1e6)
    if typ in ("DATETIME", "DATE", "TIME"):
        return value.isoformat()
    if typ == "FLOAT":
        return repr(float(value))
    return str(value)


def _estimate_bytes(cur: Any, table: str) -> int:
    """BigQuery bills by bytes scanned; a fixed per-value size is close enough for tests."""
    cols = cur.execute(f"DESCRIBE {table}").fetchall()
    rows = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return int(rows) * 8 * max(1, len(cols))


def _now_ms() -> int:
    return int(time.time() * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9050)
    parser.add_argument("--setup", help="SQL file to run first (create schemas and tables)")
    parser.add_argument("--project", default="example-project", help="project of the printed credentials")
    parser.add_argument("--no-auth", action="store_true", help="accept calls without credentials")
    args = parser.parse_args()
    emulator = BigQueryEmulator(require_auth=not args.no_auth).start(args.port)
    if args.setup:
        emulator.sql(Path(args.setup).read_text())
    key = Path(tempfile.mkdtemp(prefix="bq-emulator-")) / "service-account.json"
    key.write_text(json.dumps(emulator.service_account_info(args.project)))
    print(f"export BIGQUERY_EMULATOR_HOST={emulator.url}", flush=True)
    if not args.no_auth:
        print(f"export GOOGLE_APPLICATION_CREDENTIALS={key}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":
    main()
