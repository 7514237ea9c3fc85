"""One-request S3 object checks for FileSensor: a signed HEAD over a shared aiohttp session.

s3fs answers "does this key exist" with a HEAD and, when the key is missing, a LIST to
see whether it is a directory, each through aiobotocore's request pipeline. A sensor asks
that question on every poke, mostly while the object is missing, so it pays for both
every time. This probe sends one HEAD, signed with botocore's SigV4 signer, and leaves
everything it cannot interpret (globs, prefixes, odd storage options, 403s) to s3fs.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .._exceptions import ExternalServiceError
from .._runner import run_sync

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials

__all__ = ["FALLBACK", "S3Head"]

#: What ``S3Head.size`` returns when s3fs must answer instead.
FALLBACK: Any = object()

_CREDENTIALS_TTL = 300.0
_TIMEOUT = aiohttp.ClientTimeout(total=10)
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class S3Head:
    """HEADs S3 objects for one set of storage options, on the event loop it was made on."""

    def __init__(self, options: dict[str, Any]) -> None:
        client_kwargs = options.get("client_kwargs") or {}
        self.endpoint: str | None = (
            options.get("endpoint_url")
            or client_kwargs.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        self.region: str = (
            client_kwargs.get("region_name")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        self._bucket_regions: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._credentials: ReadOnlyCredentials | None = None
        self._credentials_at = -_CREDENTIALS_TTL

    @staticmethod
    def supports(options: dict[str, Any]) -> bool:
        """Whether these s3fs options mean nothing more than an endpoint and a region."""
        client_kwargs = options.get("client_kwargs") or {}
        return set(options) <= {"endpoint_url", "client_kwargs"} and set(client_kwargs) <= {
            "endpoint_url",
            "region_name",
        }

    async def size(self, bucket: str, key: str) -> Any:
        """The object's size, None when it does not exist, or FALLBACK.

        Raises:
            ExternalServiceError: S3 is unreachable or answered 429/5xx (retryable).
        """
        region = self._bucket_regions.get(bucket, self.region)
        status, headers = await self._head(bucket, key, region)
        moved = headers.get("x-amz-bucket-region")
        if status in (301, 400) and moved and moved != region and self.endpoint is None:
            self._bucket_regions[bucket] = moved  # the bucket lives elsewhere: ask there from now on
            status, headers = await self._head(bucket, key, moved)
        if status == 200:
            return int(headers.get("Content-Length", 0))
        if status == 404:
            return None
        if status in _RETRYABLE_STATUS:
            raise ExternalServiceError(f"S3 answered HTTP {status} for s3://{bucket}/{key}", retryable=True)
        return FALLBACK

    async def _head(self, bucket: str, key: str, region: str) -> tuple[int, Any]:
        url = self._url(bucket, key, region)
        headers: dict[str, str] = {}
        credentials = await self._frozen_credentials()
        if credentials is not None:
            # botocore is imported on first use: at import it costs every flyteagents command 0.15 s.
            from botocore.auth import S3SigV4Auth
            from botocore.awsrequest import AWSRequest

            request = AWSRequest(method="HEAD", url=url)
            S3SigV4Auth(credentials, "s3", region).add_auth(request)
            headers = dict(request.headers.items())
        try:
            async with self._client().head(URL(url, encoded=True), headers=headers, allow_redirects=False) as response:
                return response.status, response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ExternalServiceError(f"S3 is unreachable for s3://{bucket}/{key}: {exc!r}", retryable=True) from None

    def _url(self, bucket: str, key: str, region: str) -> str:
        path = quote(key, safe="/~")
        if self.endpoint is not None:
            return f"{self.endpoint.rstrip('/')}/{bucket}/{path}"
        if _DNS_BUCKET.match(bucket):
            return f"https://{bucket}.s3.{region}.amazonaws.com/{path}"
        return f"https://s3.{region}.amazonaws.com/{bucket}/{path}"

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        return self._session

    async def _frozen_credentials(self) -> ReadOnlyCredentials | None:
        # Resolving credentials may call the instance metadata service: off the loop, and rarely.
        if time.monotonic() - self._credentials_at >= _CREDENTIALS_TTL:
            self._credentials = await run_sync(_resolve_credentials)
            self._credentials_at = time.monotonic()
        return self._credentials


def _resolve_credentials() -> ReadOnlyCredentials | None:
    from botocore.session import Session

    credentials = Session().get_credentials()
    return credentials.get_frozen_credentials() if credentials is not None else None
