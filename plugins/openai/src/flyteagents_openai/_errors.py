"""Turning OpenAI client errors into a retryable flag and a readable message without secrets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai

from flyteagents import untrusted_certificate

__all__ = ["OpenAIFailure", "classify", "redact"]

_REDACTED = "<redacted>"


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every occurrence of each secret replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


@dataclass(frozen=True)
class OpenAIFailure:
    """A failed OpenAI call, described for Flyte.

    Attributes:
        retryable: True when the same call may succeed later (rate limit, 5xx, network).
        message: OpenAI's own message with the API key removed.
        status: the HTTP status, if the server answered.
        code: OpenAI's error code (``invalid_api_key``, ``rate_limit_exceeded``, ...).
    """

    retryable: bool
    message: str
    status: int | None = None
    code: str | None = None

    def info(self) -> dict[str, Any]:
        """JSON-safe details for ``Resource.custom_info``."""
        return {"status": self.status, "code": self.code, "retryable": self.retryable}


#: Where servers put an error's text: OpenAI's ``error.message``, FastAPI's ``detail`` (llama-cpp-python,
#: vLLM's older builds, many proxies), a bare ``error`` string, a validation error's ``msg``.
_TEXT_FIELDS = ("message", "detail", "error", "msg")
_MAX_TEXT = 500


def _text_of(body: object) -> str:
    """The human-readable text in an error body, wherever the server put it."""
    if isinstance(body, str):
        return body.strip()
    if isinstance(body, list):  # FastAPI validation errors: [{"loc": [...], "msg": "..."}, ...]
        return "; ".join(t for t in (_text_of(item) for item in body[:5]) if t)
    if isinstance(body, dict):
        for field in _TEXT_FIELDS:
            text = _text_of(body.get(field))
            if text:
                return text
    return ""


def _api_message(exc: openai.APIStatusError) -> str:
    text = _text_of(exc.body)
    if not text:
        try:
            text = exc.response.text.strip()  # not JSON: a proxy's HTML or plain text
        except Exception:
            text = ""
    return (text or exc.message)[:_MAX_TEXT]


def _call_of(exc: openai.APIError) -> tuple[str, str, str]:
    """(method, path, origin) of the request that failed; no query string, no user info."""
    try:
        request = exc.request
        url = request.url
    except Exception:  # no request attached
        return "", "", ""
    port = f":{url.port}" if url.port else ""
    return str(request.method), str(url.path), f"{url.scheme}://{url.host}{port}"


def classify(exc: openai.OpenAIError, api_key: str | None) -> OpenAIFailure:
    """Describe an error the OpenAI client raised, naming the call and the server for network errors and 404s."""
    if isinstance(exc, openai.APITimeoutError):
        method, path, origin = _call_of(exc)
        where = f" ({method} {path} at {origin})" if origin else ""
        return OpenAIFailure(True, redact(f"OpenAI did not answer in time{where}", api_key))
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        method, path, origin = _call_of(exc)
        where = f" at {origin} ({method} {path})" if origin else ""
        text = f"could not reach the OpenAI API{where}: {type(cause).__name__}: {cause}"
        if untrusted_certificate(exc):
            # The same certificate fails the same way every time: a configuration error, not an outage.
            text += (
                " (the server's TLS certificate is not trusted: for a private CA, set SSL_CERT_FILE in the "
                "agent's environment to a PEM bundle that includes it)"
            )
            return OpenAIFailure(False, redact(text, api_key))
        return OpenAIFailure(True, redact(text, api_key))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        # 429 also means "out of credit" (insufficient_quota): asking again will not help.
        retryable = (status in (408, 409, 429) or status >= 500) and exc.code != "insufficient_quota"
        code = exc.code or exc.type
        text = f"OpenAI error {status}" + (f" ({code})" if code else "") + f": {_api_message(exc)}"
        if status == 404 and not code:
            # Not OpenAI's own "no such model/batch" (which carries a code): the server has no such path.
            method, path, origin = _call_of(exc)
            text += (
                f" ({method} {path} not found at {origin}: does the base URL (OPENAI_BASE_URL or "
                "FLYTEAGENTS_OPENAI_BASE_URL on the agent) end in /v1, and does the server serve this API?)"
            )
        return OpenAIFailure(retryable, redact(text, api_key), status, code)
    return OpenAIFailure(False, redact(f"OpenAI client error: {exc}", api_key))
