"""HTTPSensor: waits until a URL answers an expected status (and, optionally, a matching body)."""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from .._exceptions import InvalidTaskError, TaskFailedError
from .._pool import ClientPool
from .._secrets import check_secret_name, get_secret
from ._base import BaseSensor

__all__ = ["HTTPResponse", "HTTPSensor", "HTTPSensorConfig"]

logger = logging.getLogger("flyteagents.sensor")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "OPTIONS"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Headers that must not follow a redirect to another origin: they may carry a secret.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass
class HTTPSensorConfig:
    """What an HTTPSensor asks and which answer means "done".

    Args:
        method: GET (default), HEAD, POST, PUT or OPTIONS.
        headers: request headers. They travel in the task template: never a secret here.
        body: the request body, for POST and PUT.
        expected_status: statuses that mean done (default 200); any other waits.
        fail_status: statuses that fail the sensor at once (default 401 and 403: a
            refused credential will not get better by waiting).
        body_contains: done only when the response body contains this text.
        body_regex: done only when this regular expression matches the response body.
        bearer_token_secret: name of a secret (see ``flyteagents.get_secret``) sent as
            ``Authorization: Bearer <value>``.
        secret_headers: header name -> name of a secret holding its value.
        follow_redirects: follow 3xx answers (credentials are dropped when a redirect
            leaves the URL's origin).
        max_redirects: most redirects followed in one poke.
        verify_tls: check the server's certificate.
        ca_file: a PEM file on the agent with the CAs to trust instead of the system's.
        request_timeout: seconds one poke's request may take (redirects included); a
            slower answer is a retryable error.
        max_body_bytes: the most of the body read and output; a longer body is cut.
    """

    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    expected_status: list[int] = field(default_factory=lambda: [200])
    fail_status: list[int] = field(default_factory=lambda: [401, 403])
    body_contains: str | None = None
    body_regex: str | None = None
    bearer_token_secret: str | None = None
    secret_headers: dict[str, str] = field(default_factory=dict)
    follow_redirects: bool = True
    max_redirects: int = 10
    verify_tls: bool = True
    ca_file: str | None = None
    request_timeout: float = 5.0
    max_body_bytes: int = 1024 * 1024

    def check(self) -> None:
        """Raise InvalidTaskError (a ValueError) naming the first option that cannot work."""
        if self.method.upper() not in _METHODS:
            raise InvalidTaskError(f"HTTPSensor method must be one of {', '.join(sorted(_METHODS))}: {self.method!r}")
        if not self.expected_status:
            raise InvalidTaskError("HTTPSensor expected_status names no status")
        for status in [*self.expected_status, *self.fail_status]:
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise InvalidTaskError(f"HTTPSensor status {status!r} is not an HTTP status")
        if self.body_regex is not None:
            try:
                re.compile(self.body_regex)
            except re.error as exc:
                raise InvalidTaskError(f"HTTPSensor body_regex does not compile: {exc}") from None
        for name in [self.bearer_token_secret, *self.secret_headers.values()]:
            if name is not None:
                check_secret_name(name, "HTTPSensor secret")
        if not 0 < self.request_timeout <= 60:
            raise InvalidTaskError(f"HTTPSensor request_timeout must be in (0, 60] seconds: {self.request_timeout}")
        if self.max_redirects < 0 or self.max_body_bytes < 0:
            raise InvalidTaskError("HTTPSensor max_redirects and max_body_bytes must not be negative")


@dataclass
class HTTPResponse:
    """An HTTPSensor's outputs: the final answer's status, headers and body (text, maybe cut)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    url: str = ""


_TLS: dict[str | None, ssl.SSLContext] = {}


def _tls(ca_file: str | None) -> ssl.SSLContext:
    context = _TLS.get(ca_file)
    if context is None:
        try:
            context = _TLS[ca_file] = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidTaskError(f"HTTPSensor ca_file {ca_file!r} cannot be loaded: {exc}") from None
    return context


def _open_session(key: tuple[bool, str | None]) -> aiohttp.ClientSession:
    verify, ca_file = key
    connector = aiohttp.TCPConnector(ssl=_tls(ca_file) if verify else False, limit=100, ttl_dns_cache=60)
    # Cookies would carry state from one sensor's poke to another's: none are kept.
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True)


#: One session per event loop and TLS setting, shared by every poke on that loop.
_SESSIONS: ClientPool[tuple[bool, str | None], aiohttp.ClientSession] = ClientPool(_open_session)


def _headers(headers: Any) -> dict[str, str]:
    """Response headers as a plain dict; a repeated header's values joined with ", " (RFC 9110)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        name = str(name)  # aiohttp's keys are a str subclass, which flytekit's map type refuses
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _charset(name: str | None) -> str:
    """The body's declared charset if Python knows it, else UTF-8 (no guessing from a cut body)."""
    if name:
        try:
            return codecs.lookup(name).name
        except LookupError:
            pass
    return "utf-8"


def _same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class HTTPSensor(BaseSensor):
    """Waits until a URL answers an expected status, and optionally a body that matches.

    The ``url`` input is requested once per poke. An expected status (200 by default) with a
    matching body ends the sensor, its outputs an HTTPResponse: ``status``, ``headers``,
    ``body`` and the final ``url`` after redirects. A status in ``fail_status`` fails it;
    any other status (503, 404, ...) waits. A server that cannot be reached, a reset or a
    slow answer is a retryable error (see ``max_consecutive_errors``).

    Credentials come from secrets on the agent, named in the config: never in the template.

    Args:
        name: the task's name.
        sensor_config: an HTTPSensorConfig; or its fields as keywords (``method``,
            ``expected_status``, ``body_contains``, ``bearer_token_secret``, ...).
        **options: HTTPSensorConfig's fields, when no ``sensor_config`` is given, and
            BaseSensor's options (``timeout``, ``poke_interval``, ``backoff``, ...).

    Example:
        ```python
        ready = HTTPSensor(
            name="export_ready",
            expected_status=[200],
            body_contains='"state": "done"',
            bearer_token_secret="export-api-token",
            poke_interval=60,
            backoff=2,
            max_poke_interval=600,
        )
        @workflow
        def wf(job: str) -> str:
            answer = ready(url=f"https://exports.example.com/jobs/{job}")
            return load(body=answer.body)
        ```
    """

    def __init__(self, name: str, sensor_config: HTTPSensorConfig | None = None, **options: Any) -> None:
        config_fields = set(HTTPSensorConfig.__dataclass_fields__)
        config_options = {k: options.pop(k) for k in list(options) if k in config_fields}
        if sensor_config is None:
            sensor_config = HTTPSensorConfig(**config_options)
        elif config_options:
            raise TypeError(f"HTTPSensor: pass either sensor_config or {', '.join(sorted(config_options))}, not both")
        sensor_config.method = sensor_config.method.upper()
        sensor_config.check()
        super().__init__(name=name, sensor_config=sensor_config, **options)

    @property
    def config(self) -> HTTPSensorConfig:
        """This sensor's HTTPSensorConfig."""
        return self.sensor_config  # type: ignore[no-any-return]

    async def poke(self, url: str) -> HTTPResponse | None:
        """Request ``url`` once: its answer when done, None while waiting."""
        config = self.config
        target = URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise InvalidTaskError(f"HTTPSensor url must be an http:// or https:// URL, got {url!r}")
        session = await _SESSIONS.get((config.verify_tls, config.ca_file))
        headers = {**config.headers, **self._secret_headers()}
        try:
            status, answer_headers, body, final = await asyncio.wait_for(
                self._request(session, target, headers), config.request_timeout
            )
        except (TimeoutError, asyncio.TimeoutError):
            raise TimeoutError(f"{url} did not answer within {config.request_timeout:g}s") from None
        except aiohttp.ClientError as exc:
            # aiohttp's messages name the host and the reason, never the request's headers.
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None
        if status in config.fail_status:
            raise TaskFailedError(f"{final} answered {status}")
        if status not in config.expected_status:
            logger.debug("%s answered %d: waiting", final, status)
            return None
        if config.body_contains is not None and config.body_contains not in body:
            return None
        if config.body_regex is not None and re.search(config.body_regex, body) is None:
            return None
        return HTTPResponse(status=status, headers=answer_headers, body=body, url=str(final))

    def _secret_headers(self) -> dict[str, str]:
        config = self.config
        headers = {header: get_secret(secret) for header, secret in config.secret_headers.items()}
        if config.bearer_token_secret is not None:
            headers["Authorization"] = f"Bearer {get_secret(config.bearer_token_secret)}"
        return headers

    async def _request(
        self, session: aiohttp.ClientSession, url: URL, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], str, URL]:
        """Send the request, following redirects by hand so credentials never leave the URL's origin."""
        config = self.config
        method, body, origin = config.method, config.body, url
        for _ in range(config.max_redirects + 1):
            async with session.request(method, url, headers=headers, data=body, allow_redirects=False) as response:
                location = response.headers.get("Location")
                if not (config.follow_redirects and response.status in _REDIRECTS and location):
                    data = await response.content.read(config.max_body_bytes) if method != "HEAD" else b""
                    text = data.decode(_charset(response.charset), errors="replace")
                    return response.status, _headers(response.headers), text, url
            next_url = url.join(URL(location))
            if next_url.scheme not in ("http", "https"):
                raise TaskFailedError(f"{url} redirected to a {next_url.scheme or 'relative'} URL: {location!r}")
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = ("GET", None) if method != "HEAD" else (method, None)
            if not _same_origin(origin, next_url):
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
                headers = {k: v for k, v in headers.items() if k not in config.secret_headers}
            url = next_url
        raise TaskFailedError(f"{origin} redirected more than {config.max_redirects} times")
