"""Turning OpenAI client errors into a retryable flag and a readable message without secrets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai

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


def _api_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def classify(exc: openai.OpenAIError, api_key: str | None) -> OpenAIFailure:
    """Describe an error the OpenAI client raised."""
    if isinstance(exc, openai.APITimeoutError):
        return OpenAIFailure(True, "OpenAI did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return OpenAIFailure(True, redact(f"could not reach OpenAI: {type(cause).__name__}: {cause}", api_key))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        # 429 also means "out of credit" (insufficient_quota): asking again will not help.
        retryable = (status in (408, 409, 429) or status >= 500) and exc.code != "insufficient_quota"
        code = exc.code or exc.type
        text = f"OpenAI error {status}" + (f" ({code})" if code else "") + f": {_api_message(exc)}"
        return OpenAIFailure(retryable, redact(text, api_key), status, code)
    return OpenAIFailure(False, redact(f"OpenAI client error: {exc}", api_key))
