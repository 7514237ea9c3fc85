"""Fixtures for the SQS sensor tests: one real moto_server process (SQS and S3) for the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from flyteagents.testing import MotoServer


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    saved = {k: os.environ.get(k) for k in server.env}
    # The SDKs (aiobotocore for SQS, s3fs for outputs.pb) find the server and fake keys here.
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def sqs(moto: MotoServer) -> Any:
    return boto3.client("sqs", endpoint_url=moto.endpoint_url, **moto.credentials)


@pytest.fixture
def queue_url(sqs: Any) -> str:
    return str(sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:10]}")["QueueUrl"])


@pytest.fixture
def output_prefix(moto: MotoServer) -> str:
    """An S3 prefix like the one FlytePropeller hands CreateTask."""
    s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, **moto.credentials)
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/metadata/propeller/n0/data/0"
