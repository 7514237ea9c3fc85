"""SQSSensor: done when a (matching) message arrives on an Amazon SQS queue."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine

from flyteagents import ExternalServiceError, untrusted_certificate
from flyteagents.sensor import BaseSensor, poke_context

from ._clients import READ_MARGIN, sqs_client
from ._config import SQSSensorConfig, parse_json_path, resolve_endpoint
from ._outputs import outputs_path, read_outputs, write_outputs

__all__ = ["SQSMessage", "SQSMessages", "SQSSensor"]

logger = logging.getLogger("flyteagents_aws")
_MISSING = object()
# Client errors that asking again will not fix: the task itself is wrong.
_PERMANENT = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidParameterValue",
}


@dataclass
class SQSMessage:
    """One received message. Binary message attributes are base64 text."""

    message_id: str
    body: str
    receipt_handle: str
    md5_of_body: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    message_attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class SQSMessages:
    """The sensor's output: the matching messages of the receive that found them."""

    messages: list[SQSMessage] = field(default_factory=list)


def _json_at(body: str, steps: list[str | int]) -> Any:
    try:
        value: Any = json.loads(body)
    except ValueError:
        return _MISSING
    for step in steps:
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        else:
            return _MISSING
    return value


def _attribute_text(attr: dict[str, Any]) -> str:
    if "StringValue" in attr:
        return str(attr["StringValue"])
    if "BinaryValue" in attr:
        return base64.b64encode(attr["BinaryValue"]).decode()
    return ""


def _failed(exc: Exception, what: str) -> ExternalServiceError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        return ExternalServiceError(f"SQS {what} failed: {code}: {message}", retryable=code not in _PERMANENT)
    if untrusted_certificate(exc):
        return ExternalServiceError(
            f"SQS {what} failed: the endpoint's TLS certificate is not trusted (CERTIFICATE_VERIFY_FAILED): for "
            "a private CA, set AWS_CA_BUNDLE in the agent's environment to a PEM bundle that includes it",
            retryable=False,
        )
    if isinstance(exc, NoCredentialsError):
        return ExternalServiceError(
            f"SQS {what} failed: the agent has no AWS credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or a profile or role) in the agent's environment, or name a "
            "credentials_secret in the sensor's config",
            retryable=False,
        )
    return ExternalServiceError(f"SQS {what} failed: {type(exc).__name__}: {exc}", retryable=True)


class SQSSensor(BaseSensor):
    """Waits until a message (matching its config's filters) arrives on an SQS queue.

    Each poke receives once (long-polling at most ``wait_seconds``) with a shared
    aiobotocore client. Non-matching messages are never deleted: they stay hidden for the
    visibility timeout (so the next pokes see other messages), or are made visible again
    at once with ``release_non_matching``.

    No message is lost or handed over twice when a GetTask answer is lost on its way to
    FlytePropeller: the poke writes the matching messages to ``{output_prefix}/outputs.pb``
    *before* deleting them, and a later poke of the same task that finds that file answers
    SUCCEEDED with it (deleting its messages again, which is harmless) instead of
    receiving more.

    Example:
        >>> wait = SQSSensor(
        ...     name="wait_for_order",
        ...     sensor_config=SQSSensorConfig(
        ...         queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/orders",
        ...         json_path="$.status", json_value="paid",
        ...     ),
        ...     timeout=3600,
        ... )
    """

    def __init__(self, name: str, sensor_config: SQSSensorConfig, **kwargs: Any) -> None:
        if not isinstance(sensor_config, SQSSensorConfig):
            raise TypeError(f"SQSSensor needs an SQSSensorConfig, got {type(sensor_config).__name__}")
        super().__init__(name=name, sensor_config=sensor_config, **kwargs)
        self._json_path = parse_json_path(sensor_config.json_path) if sensor_config.json_path else None
        self._body_regex = re.compile(sensor_config.body_regex) if sensor_config.body_regex else None

    @property
    def config(self) -> SQSSensorConfig:
        """The sensor's config."""
        return self.sensor_config  # type: ignore[no-any-return]

    async def poke(self) -> SQSMessages | None:
        """Receive once; return the matching messages (recorded, then deleted), if any."""
        config = self.config
        prefix = poke_context().output_prefix
        path = outputs_path(prefix) if prefix else None
        region, endpoint = resolve_endpoint(config, os.environ)
        try:
            client = await sqs_client(region, endpoint, config.credentials_secret)
        except NoRegionError:
            raise ExternalServiceError(
                f"no AWS region for {config.queue_url}: set region in the SQSSensorConfig or "
                "AWS_DEFAULT_REGION in the agent's environment",
                retryable=False,
            ) from None
        if path is not None:
            recorded = await read_outputs(path)
            if recorded is not None:
                # An earlier poke got these messages but its answer never arrived.
                found = await self._from_literals(recorded)
                await self._delete(client, found.messages)
                return found
        received = await self._receive(client)
        matching = [m for m in received if self._matches(m)]
        others = [m for m in received if not self._matches(m)]
        await self._release(client, others)
        if not matching:
            return None
        found = SQSMessages(messages=[self._message(m) for m in matching])
        if path is not None:
            await write_outputs(path, await self._to_literals(found))
        await self._delete(client, found.messages)
        return found

    async def _receive(self, client: Any) -> list[dict[str, Any]]:
        config = self.config
        kwargs: dict[str, Any] = {
            "QueueUrl": config.queue_url,
            "MaxNumberOfMessages": config.max_messages,
            "WaitTimeSeconds": config.wait_seconds,
            "AttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if config.visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = config.visibility_timeout
        try:
            response = await asyncio.wait_for(client.receive_message(**kwargs), config.wait_seconds + READ_MARGIN)
        except (ClientError, BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            raise _failed(exc, "receive") from None
        return list(response.get("Messages", []))

    def _matches(self, message: dict[str, Any]) -> bool:
        body = message.get("Body", "")
        if self._json_path is not None and _json_at(body, self._json_path) != self.config.json_value:
            return False
        return self._body_regex is None or self._body_regex.search(body) is not None

    @staticmethod
    def _message(message: dict[str, Any]) -> SQSMessage:
        return SQSMessage(
            message_id=message["MessageId"],
            body=message.get("Body", ""),
            receipt_handle=message["ReceiptHandle"],
            md5_of_body=message.get("MD5OfBody", ""),
            attributes={k: str(v) for k, v in (message.get("Attributes") or {}).items()},
            message_attributes={k: _attribute_text(v) for k, v in (message.get("MessageAttributes") or {}).items()},
        )

    async def _release(self, client: Any, messages: list[dict[str, Any]]) -> None:
        if not messages or not self.config.release_non_matching:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(messages)
        ]
        try:
            await asyncio.wait_for(
                client.change_message_visibility_batch(QueueUrl=self.config.queue_url, Entries=entries), READ_MARGIN
            )
        except (ClientError, BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            # Not fatal: they reappear after the visibility timeout anyway.
            logger.warning("could not release %d non-matching SQS messages: %s", len(messages), exc)

    async def _delete(self, client: Any, messages: list[SQSMessage]) -> None:
        if not self.config.delete_on_receive or not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)]
        try:
            response = await asyncio.wait_for(
                client.delete_message_batch(QueueUrl=self.config.queue_url, Entries=entries), READ_MARGIN
            )
        except (ClientError, BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            raise _failed(exc, "delete") from None
        failed = [f for f in response.get("Failed", []) if f.get("Code") != "ReceiptHandleIsInvalid"]
        if failed:
            # The outputs are recorded: the next poke finds them and deletes again.
            raise ExternalServiceError(f"SQS delete failed for {len(failed)} message(s): {failed[0].get('Code')}")

    async def _to_literals(self, found: SQSMessages) -> Any:
        ctx = FlyteContextManager.current_context()
        return await TypeEngine._dict_to_literal_map(
            ctx, {"messages": found.messages}, dict(self.python_interface.outputs)
        )

    async def _from_literals(self, literals: Any) -> SQSMessages:
        ctx = FlyteContextManager.current_context()
        values = await TypeEngine._literal_map_to_kwargs(ctx, literals, dict(self.python_interface.outputs))
        return SQSMessages(messages=list(values["messages"]))
