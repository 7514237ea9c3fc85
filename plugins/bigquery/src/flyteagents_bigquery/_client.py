"""BigQuery clients: one per (project, credentials), built once and reused."""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from typing import Any

import google.auth
import requests.adapters
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import bigquery
from google.oauth2 import service_account

from flyteagents import ExternalServiceError, get_secret
from flyteagents.plugin import default_sync_workers, secret_fingerprint

__all__ = [
    "API_ENDPOINT_ENV",
    "CREDENTIALS_SECRET_ENV",
    "EMULATOR_HOST_ENV",
    "ClientCache",
    "emulator_host",
]

SCOPES = ("https://www.googleapis.com/auth/bigquery", "https://www.googleapis.com/auth/cloud-platform")
#: An emulator's address (``host:port`` or a URL); calls go there, anonymously unless credentials are found.
EMULATOR_HOST_ENV = "BIGQUERY_EMULATOR_HOST"
#: Another API root that needs real credentials (Private Service Connect, a proxy, a regional endpoint).
API_ENDPOINT_ENV = "FLYTEAGENTS_BIGQUERY_API_ENDPOINT"
#: The secret a process reading ``bq://`` outputs uses, when it is not the agent that wrote them.
CREDENTIALS_SECRET_ENV = "FLYTEAGENTS_BIGQUERY_CREDENTIALS_SECRET"


def emulator_host() -> str | None:
    """``BIGQUERY_EMULATOR_HOST`` as a URL: ``host:port`` (as emulators document it) gains ``http://``."""
    host = os.environ.get(EMULATOR_HOST_ENV, "").strip().rstrip("/")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def _api_endpoint() -> str | None:
    endpoint = os.environ.get(API_ENDPOINT_ENV, "").strip().rstrip("/")
    if endpoint and "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    return endpoint or None


class ClientCache:
    """Builds ``bigquery.Client`` objects lazily and hands the same one out again.

    A client is keyed by project and credentials (Application Default Credentials, or
    a named secret and a digest of its value, so a rotated key gets a new client). Each
    client has its own HTTP connection pool of ``pool_size`` connections, sized to the
    threads that use it. At most ``max_clients`` are kept; the least recently used is
    closed beyond that.

    Args:
        pool_size: connections per client; defaults to the agent runner's thread count.
        max_clients: clients kept at once.
        api_endpoint: an alternative API root; None honours ``BIGQUERY_EMULATOR_HOST``
            (with or without ``http://``), then ``FLYTEAGENTS_BIGQUERY_API_ENDPOINT``, and
            otherwise uses Google's.
        http_timeout: seconds allowed for fetching an access token.
    """

    def __init__(
        self,
        pool_size: int | None = None,
        max_clients: int = 32,
        api_endpoint: str | None = None,
        http_timeout: float = 30.0,
    ) -> None:
        self.pool_size = pool_size or default_sync_workers()
        self.max_clients = max_clients
        self.api_endpoint = api_endpoint
        self.http_timeout = http_timeout
        self._clients: OrderedDict[tuple[str, ...], bigquery.Client] = OrderedDict()
        self._lock = threading.Lock()
        self.created = 0

    def get(self, project: str, credentials_secret: str | None = None) -> bigquery.Client:
        """The client for ``project`` with ADC or the named secret's service-account key."""
        # A Flyte secret "group/key": flytekit's _FSEC_GROUP_KEY or /etc/secrets/group/key.
        secret_value = get_secret(credentials_secret, flytekit=True) if credentials_secret else None
        if secret_value is not None:
            digest = secret_fingerprint(secret_value)
            key: tuple[str, ...] = (project, "secret", credentials_secret or "", digest)
        else:
            key = (project, "adc", os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", ""))
        # The endpoint is part of the key: BIGQUERY_EMULATOR_HOST may change in a process.
        endpoint, emulated = self._endpoint()
        key += (endpoint or "", str(emulated))
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            client = self._build(project, secret_value, endpoint, emulated)
            self._clients[key] = client
            self.created += 1
            while len(self._clients) > self.max_clients:
                _, old = self._clients.popitem(last=False)
                old.close()
            return client

    def close(self) -> None:
        """Close every client's connections."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def _endpoint(self) -> tuple[str | None, bool]:
        """(API root or None for Google's, whether it is an emulator)."""
        if self.api_endpoint:
            return self.api_endpoint, False
        emulator = emulator_host()
        if emulator:
            return emulator, True
        return _api_endpoint(), False

    def _build(self, project: str, secret_value: str | None, endpoint: str | None, emulated: bool) -> bigquery.Client:
        credentials = _credentials(secret_value, anonymous_fallback=emulated)
        session = AuthorizedSession(credentials, refresh_timeout=self.http_timeout)
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # The endpoint is passed on explicitly: the client only checks that the credentials'
        # universe matches googleapis.com when no endpoint is given.
        options: dict[str, Any] = {"api_endpoint": endpoint} if endpoint else {}
        return bigquery.Client(project=project, credentials=credentials, _http=session, client_options=options or None)


def _credentials(secret_value: str | None, anonymous_fallback: bool = False) -> Credentials:
    if secret_value is None:
        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
        except google.auth.exceptions.DefaultCredentialsError as exc:
            if anonymous_fallback:
                # An emulator needs no key; a dummy one would make google-auth ask Google for a token.
                return AnonymousCredentials()  # type: ignore[no-untyped-call]
            raise ExternalServiceError(
                f"no Application Default Credentials for BigQuery: {exc} (against an emulator, set "
                f"{EMULATOR_HOST_ENV} and no credentials are needed)",
                retryable=False,
            ) from None
        return credentials
    try:
        info = json.loads(secret_value)
        return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)  # type: ignore[no-any-return]
    except (ValueError, TypeError, KeyError) as exc:
        # Never echo the secret: name only what is wrong with its shape.
        reason = "it is not JSON" if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise ExternalServiceError(
            f"the credentials secret is not a service-account key ({reason})", retryable=False
        ) from None
