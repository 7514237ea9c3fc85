"""The Jobs API 2.1 HTTP client: pooled sessions, per-request timeouts, retries with backoff."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from typing import Any

import aiohttp
from yarl import URL

from flyteagents import ExternalServiceError
from flyteagents.plugin import ClientPool, secret_fingerprint

__all__ = ["DatabricksAPIError", "JobsClient", "JobsClientPool"]

API = "/api/2.1/jobs"
#: Answers worth asking again: rate limited, or the workspace is briefly unwell.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 2.0


class DatabricksAPIError(ExternalServiceError):
    """The Jobs API refused a request or could not be reached.

    Args:
        message: what failed; never holds a credential.
        status: the HTTP status, or None when no answer came.
        error_code: Databricks' ``error_code`` (``INVALID_PARAMETER_VALUE``, ...), if any.
        retryable: True for 429, 5xx and network errors that outlasted the retries.
    """

    def __init__(self, message: str, *, status: int | None, error_code: str | None, retryable: bool) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.error_code = error_code


class JobsClient:
    """One workspace and credential's connection pool, with the Jobs API calls the agent makes.

    Every call is bounded: each HTTP request by ``request_timeout`` seconds, and the call,
    retries included, by ``call_timeout`` seconds. 429 and 5xx answers and network errors
    are retried with jittered exponential backoff (honouring ``Retry-After``) while the call's
    budget lasts, then raised as a retryable DatabricksAPIError.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        request_timeout: float = 5.0,
        call_timeout: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.request_timeout = request_timeout
        self.call_timeout = call_timeout
        # Created inside the running loop; aiohttp binds a session to it.
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        # Made per client, not once at import as aiohttp's default is: SSL_CERT_FILE/SSL_CERT_DIR
        # (a private CA) are read when the client is created.
        tls: ssl.SSLContext | bool = ssl.create_default_context() if self.base_url.startswith("https://") else True
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60, ssl=tls),
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # the Jobs API sets none; filtering them cost every call
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled aiohttp session (for the OAuth token endpoint, which takes no bearer token)."""
        return self._session

    @property
    def closed(self) -> bool:
        """True once ``aclose`` ran."""
        return self._session.closed

    async def aclose(self) -> None:
        """Close the pool's connections."""
        await self._session.close()

    async def submit(self, payload: dict[str, Any]) -> int:
        """``runs/submit``: start a one-time run and return its ``run_id``.

        Retried only when the payload has an ``idempotency_token``: without one, a retry after
        a lost answer could start a second run.
        """
        body = await self.call("POST", "/runs/submit", json_body=payload, retry="idempotency_token" in payload)
        run_id = body.get("run_id")
        if not isinstance(run_id, int):
            raise DatabricksAPIError(
                f"runs/submit answered without a run_id: {str(body)[:200]}",
                status=200,
                error_code=None,
                retryable=True,
            )
        return run_id

    async def get_run(self, run_id: int) -> dict[str, Any]:
        """``runs/get``: the run's state, tasks and page URL."""
        return await self.call("GET", f"/runs/get?run_id={int(run_id)}")

    async def get_output(self, task_run_id: int) -> dict[str, Any]:
        """``runs/get-output`` of one task run: its ``error`` and ``error_trace`` if it failed."""
        return await self.call("GET", f"/runs/get-output?run_id={int(task_run_id)}")

    async def cancel_run(self, run_id: int) -> None:
        """``runs/cancel``: ask the run to stop; cancelling a finished run is a no-op."""
        await self.call("POST", "/runs/cancel", json_body={"run_id": run_id})

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> dict[str, Any]:
        """Make one Jobs API call, retrying transient failures within ``call_timeout`` (unless ``retry`` is False).

        Raises:
            DatabricksAPIError: a non-retryable answer (4xx but 429), or transient failures
                that outlasted the budget (retryable).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.call_timeout
        # Built already encoded (our paths and query strings are), so aiohttp skips parsing it again.
        url = URL(f"{self.base_url}{API}{path}", encoded=True)
        op = path.lstrip("/").split("?", 1)[0]
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            retry_after: str | None = None
            # The session's timeout is request_timeout; only a call's last attempts need a shorter one.
            timeout = None if remaining >= self.request_timeout else aiohttp.ClientTimeout(total=max(remaining, 0.05))
            try:
                async with self._session.request(
                    method, url, params=params, json=json_body, **({"timeout": timeout} if timeout else {})
                ) as resp:
                    status = resp.status
                    raw = await resp.read()
                    retry_after = resp.headers.get("Retry-After")
            except aiohttp.ClientConnectorCertificateError as exc:
                # The same certificate fails the same way every time: a configuration error.
                raise DatabricksAPIError(
                    f"Databricks {op} failed: {_certificate_problem(exc)}",
                    status=None,
                    error_code=None,
                    retryable=False,
                ) from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, failure = None, f"{type(exc).__name__} {exc}".strip()
            else:
                body = _json_object(raw)
                if status == 200:
                    return body
                code = body.get("error_code") if isinstance(body.get("error_code"), str) else None
                detail = str(body.get("message") or raw[:200].decode(errors="replace"))
                failure = f"HTTP {status}" + (f" {code}" if code else "") + f": {detail}"
                if status not in RETRYABLE_STATUS:
                    raise DatabricksAPIError(
                        f"Databricks {op} failed: {failure}", status=status, error_code=code, retryable=False
                    )
            delay = _backoff(attempt, retry_after)
            if not retry or loop.time() + delay >= deadline:
                raise DatabricksAPIError(
                    f"Databricks {op} failed after {attempt} attempt(s) in {self.call_timeout:g}s: {failure}",
                    status=status,
                    error_code=None,
                    retryable=True,
                )
            await asyncio.sleep(delay)


def _certificate_problem(exc: aiohttp.ClientConnectorCertificateError) -> str:
    """What is wrong with the workspace's certificate, and how to fix it on the agent."""
    error = exc.certificate_error
    reason = getattr(error, "verify_message", None) or str(error)
    where = f"{exc.host}:{exc.port}"
    if "mismatch" in reason.lower() or "doesn't match" in reason.lower():
        return (
            f"the TLS certificate of {where} does not name that host ({reason}): use the host name "
            "the certificate was issued for in the workspace instance URL"
        )
    return (
        f"the TLS certificate of {where} is not trusted ({reason}): if the workspace, or a proxy in "
        "front of it, uses a private CA, set SSL_CERT_FILE in the agent's environment to a PEM "
        "bundle that includes that CA"
    )


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), 30.0)
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    base = min(_FIRST_BACKOFF * 2 ** (attempt - 1), _MAX_BACKOFF)
    return base * (0.5 + random.random() / 2)


class JobsClientPool:
    """One JobsClient per (event loop, workspace, credential), reused across calls.

    The credential is keyed by a one-way fingerprint of the token, never the token itself.
    At most ``max_clients`` per loop are kept; beyond that the least recently used one (a
    rotated token's, typically) is closed a minute later, once calls still using it are done.
    Clients still open when their loop shuts down are closed then.
    """

    def __init__(self, max_clients: int = 16, **client_kwargs: Any) -> None:
        self.max_clients = max_clients
        self.client_kwargs = client_kwargs
        self._pool: ClientPool[tuple[str, str], JobsClient] = ClientPool(max_size=max_clients)

    async def client(self, base_url: str, token: str | None) -> JobsClient:
        """The pooled client for this workspace and token (None: unauthenticated) on the running loop."""
        key = (base_url, secret_fingerprint(token) if token is not None else "")
        return await self._pool.get(key, lambda: JobsClient(base_url, token, **self.client_kwargs))

    def clients(self) -> list[JobsClient]:
        """The clients pooled for the running loop (for tests and diagnostics)."""
        return self._pool.clients()

    async def aclose(self) -> None:
        """Close the running loop's clients."""
        await self._pool.aclose()
