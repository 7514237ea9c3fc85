"""SQSSensorConfig: which queue an SQSSensor polls, how, and which messages count."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from flyteagents.plugin import check_secret_name

__all__ = ["MAX_WAIT_SECONDS", "SQSSensorConfig", "resolve_endpoint"]

#: The longest long-poll one poke may do: FlytePropeller gives GetTask only a few seconds.
MAX_WAIT_SECONDS = 3
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
# sqs.REGION.amazonaws.com[.cn], REGION.queue.amazonaws.com, sqs.REGION.api.aws, sqs-fips.REGION....
_AWS_HOST = re.compile(
    r"^(?:sqs(?:-fips)?\.(?P<a>[a-z0-9-]+)|(?P<b>[a-z0-9-]+)\.queue)\.(?:amazonaws\.com(?:\.cn)?|api\.aws)$"
)
#: Environment variables botocore reads an endpoint override from (the SQS one first).
_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL")


@dataclass
class SQSSensorConfig:
    """Where an SQSSensor polls and what it waits for.

    Credentials come from the agent's standard AWS chain (environment, profile, IAM role),
    or from a named secret holding ``{"aws_access_key_id": ..., "aws_secret_access_key":
    ..., "aws_session_token": ...}``; the config itself never holds a secret.

    Args:
        queue_url: the queue's URL.
        region: the AWS region; by default the one in an AWS queue URL, else the agent's
            (``AWS_DEFAULT_REGION``, ...).
        endpoint_url: another SQS endpoint (a VPC endpoint, LocalStack, moto). By default the
            agent's ``AWS_ENDPOINT_URL_SQS``/``AWS_ENDPOINT_URL``, else, for a queue URL that is
            not on an AWS host, that URL's scheme and host.
        max_messages: receive up to this many messages per poke (1-10); all matching ones
            are the sensor's outputs.
        wait_seconds: long-poll time of one receive, 0-3 s: well under FlytePropeller's
            GetTask deadline.
        visibility_timeout: seconds received messages stay hidden from other consumers;
            None keeps the queue's own setting.
        delete_on_receive: delete matching messages once they are safely recorded as the
            task's outputs (default). With False they reappear after the visibility timeout.
        json_path: only messages whose body is JSON with this value at this path count
            (``a.b[0].c`` or ``$.a.b[0].c``); compared with ``json_value``.
        json_value: the value ``json_path`` must hold (any JSON value).
        body_regex: only messages whose body matches this regex (``re.search``) count.
        release_non_matching: make non-matching messages visible again at once, for other
            consumers of the queue. Off by default: they stay hidden for the visibility
            timeout, so the next pokes receive other messages instead of the same ones
            (SQS tends to hand out the oldest messages first). They are never deleted.
        credentials_secret: the name of a secret with AWS keys; None uses the standard chain.
    """

    queue_url: str
    region: str | None = None
    endpoint_url: str | None = None
    max_messages: int = 1
    wait_seconds: int = 1
    visibility_timeout: int | None = 30
    delete_on_receive: bool = True
    json_path: str | None = None
    json_value: Any = None
    body_regex: str | None = None
    release_non_matching: bool = False
    credentials_secret: str | None = None

    def __post_init__(self) -> None:
        url = urlparse(self.queue_url)
        if url.scheme not in ("http", "https") or not url.netloc or len(url.path.strip("/").split("/")) != 2:
            raise ValueError(
                f"queue_url must look like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, got {self.queue_url!r}"
            )
        if self.endpoint_url is not None:
            endpoint = urlparse(self.endpoint_url)
            if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
                raise ValueError(f"endpoint_url must be an http(s) URL, got {self.endpoint_url!r}")
        if self.region is not None and not _REGION.match(self.region):
            raise ValueError(f"region {self.region!r} is not an AWS region name")
        if not 1 <= self.max_messages <= 10:
            raise ValueError(f"max_messages must be 1-10 (the SQS limit), got {self.max_messages}")
        if not 0 <= self.wait_seconds <= MAX_WAIT_SECONDS:
            raise ValueError(
                f"wait_seconds must be 0-{MAX_WAIT_SECONDS}: a poke must answer within FlytePropeller's "
                f"GetTask deadline, got {self.wait_seconds}"
            )
        if self.visibility_timeout is not None and not 0 <= self.visibility_timeout <= 43200:
            raise ValueError(f"visibility_timeout must be 0-43200 seconds, got {self.visibility_timeout}")
        if self.json_path is not None:
            parse_json_path(self.json_path)
        elif self.json_value is not None:
            raise ValueError("json_value needs json_path")
        if self.body_regex is not None:
            try:
                re.compile(self.body_regex)
            except re.error as exc:
                raise ValueError(f"body_regex {self.body_regex!r} does not compile: {exc}") from None
        if self.credentials_secret is not None:
            check_secret_name(self.credentials_secret, "credentials_secret")


def resolve_endpoint(config: SQSSensorConfig, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(region, endpoint_url) to create the SQS client with; None leaves it to botocore.

    botocore sends every call to the region's AWS endpoint whatever host the queue URL
    names, so a queue URL on another host (moto, LocalStack, an ElasticMQ) is its own
    endpoint unless the config or the agent's environment names one.
    """
    host = (urlparse(config.queue_url).hostname or "").lower()
    aws = _AWS_HOST.match(host)
    region = config.region
    if region is None and aws is not None:
        region = aws.group("a") or aws.group("b")
    if host == "queue.amazonaws.com":  # the legacy host of us-east-1
        aws, region = aws or _AWS_HOST.match("us-east-1.queue.amazonaws.com"), region or "us-east-1"
    if region is None and not environ.get("AWS_DEFAULT_REGION"):
        # What Lambda, ECS and the other AWS SDKs set; botocore itself reads only AWS_DEFAULT_REGION.
        region = environ.get("AWS_REGION") or None
    endpoint = config.endpoint_url
    if endpoint is None and aws is None and not any(environ.get(v) for v in _ENDPOINT_VARIABLES):
        url = urlparse(config.queue_url)
        endpoint = f"{url.scheme}://{url.netloc}"
    return region, endpoint


_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]")


def parse_json_path(path: str) -> list[str | int]:
    """``$.a.b[0]["c d"]`` -> ``["a", "b", 0, "c d"]``.

    Raises:
        ValueError: the path is empty or not of that form.
    """
    rest = path[1:] if path.startswith("$") else path
    steps: list[str | int] = []
    pos = 0
    while pos < len(rest):
        match = _STEP.match(rest, pos)
        if match is None or (match.group(1) is not None and pos > 0 and rest[pos] != "."):
            raise ValueError(f"json_path {path!r} is not of the form a.b[0].c (at {rest[pos:]!r})")
        name, index, dq, sq = match.groups()
        steps.append(
            int(index) if index is not None else (name if name is not None else (dq if dq is not None else sq))
        )
        pos = match.end()
    if not steps:
        raise ValueError(f"json_path {path!r} names no field")
    return steps
