"""SQSSensor against a real moto_server: later messages, filters, the lost-answer case, config errors."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import boto3
import pytest
from flyteagents_aws import SQSMessage, SQSSensor, SQSSensorConfig
from flyteagents_aws._outputs import outputs_path, read_outputs
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import FlyteContextManager, task, workflow
from flytekit.core.type_engine import TypeEngine

from flyteagents import InvalidTaskError
from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.testing import flyte_connection, template_of


def outputs(sensor: Any, resource: Any) -> list[SQSMessage]:
    ctx = FlyteContextManager.current_context()
    return TypeEngine.literal_map_to_kwargs(ctx, resource.outputs, sensor.python_interface.outputs)["messages"]


def roundtrip(meta: SensorMetadata) -> SensorMetadata:
    return SensorMetadata.decode(meta.encode())


def sensor_for(moto: Any, queue_url: str, **options: Any) -> SQSSensor:
    options.setdefault("wait_seconds", 0)
    config = SQSSensorConfig(queue_url=queue_url, endpoint_url=moto.endpoint_url, region="us-east-1", **options)
    return SQSSensor(name=f"sqs_{uuid.uuid4().hex[:6]}", sensor_config=config)


def queue_size(sqs: Any, queue_url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def engine() -> SensorEngine:
    return SensorEngine()


async def start(engine: SensorEngine, sensor: SQSSensor, output_prefix: str) -> SensorMetadata:
    return roundtrip(await engine.create(template_of(sensor), output_prefix, None))


async def test_message_arriving_later_is_output_and_deleted(
    moto: Any, sqs: Any, queue_url: str, output_prefix: str, engine: SensorEngine
) -> None:
    sensor = sensor_for(moto, queue_url)
    meta = await start(engine, sensor, output_prefix)
    assert (await engine.get(meta)).phase == TaskExecution.RUNNING

    sent = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody='{"order": 7}',
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "paid"}},
    )
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    (message,) = outputs(sensor, resource)
    assert (message.message_id, message.body) == (sent["MessageId"], '{"order": 7}')
    assert message.message_attributes == {"kind": "paid"}
    assert message.attributes["ApproximateReceiveCount"] == "1"
    assert message.receipt_handle and message.md5_of_body == sent["MD5OfMessageBody"]
    assert queue_size(sqs, queue_url) == 0, "delete_on_receive is the default"
    recorded = await read_outputs(outputs_path(output_prefix))
    assert recorded is not None and recorded == resource.outputs, "outputs.pb was written before the delete"


async def test_filters_skip_non_matching_messages_without_deleting_them(
    moto: Any, sqs: Any, queue_url: str, output_prefix: str, engine: SensorEngine
) -> None:
    sensor = sensor_for(
        moto, queue_url, json_path="$.order.status", json_value="paid", body_regex="express", max_messages=10
    )
    meta = await start(engine, sensor, output_prefix)
    for body in ('{"order": {"status": "new"}, "x": "express"}', "not json express", '{"order": {"status": "paid"}}'):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    assert (await engine.get(meta)).phase == TaskExecution.RUNNING
    hidden = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert hidden["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "3", "hidden, not deleted"

    sqs.send_message(QueueUrl=queue_url, MessageBody='{"order": {"status": "paid", "ship": "express"}}')
    for _ in range(10):  # SQS may hand out any subset of the queue per receive
        resource = await engine.get(meta)
        if resource.phase != TaskExecution.RUNNING:
            break
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    assert [m.body for m in outputs(sensor, resource)] == ['{"order": {"status": "paid", "ship": "express"}}']
    assert queue_size(sqs, queue_url) == 3, "only the matching message is deleted"


async def test_one_at_a_time_walks_past_non_matching_messages(
    moto: Any, sqs: Any, queue_url: str, output_prefix: str, engine: SensorEngine
) -> None:
    sensor = sensor_for(moto, queue_url, json_path="event", json_value="uploaded", max_messages=1)
    meta = await start(engine, sensor, output_prefix)
    for event in ("deleted", "deleted", "uploaded"):
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"event": event}))
    phases = [(await engine.get(meta)).phase for _ in range(3)]
    assert phases[-1] == TaskExecution.SUCCEEDED, "the oldest message must not be received on every poke"


async def test_release_non_matching_makes_them_visible_at_once(
    moto: Any, sqs: Any, queue_url: str, output_prefix: str, engine: SensorEngine
) -> None:
    sensor = sensor_for(moto, queue_url, body_regex="^yes$", max_messages=10, release_non_matching=True)
    meta = await start(engine, sensor, output_prefix)
    for body in ("no", "nope"):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    assert (await engine.get(meta)).phase == TaskExecution.RUNNING
    visible = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert visible["Attributes"]["ApproximateNumberOfMessages"] == "2"


async def test_lost_answer_poked_again_delivers_once_and_loses_nothing(
    moto: Any, sqs: Any, queue_url: str, output_prefix: str
) -> None:
    sensor = sensor_for(moto, queue_url, max_messages=1)
    meta = await start(SensorEngine(), sensor, output_prefix)
    first_id = sqs.send_message(QueueUrl=queue_url, MessageBody="first")["MessageId"]
    first = await SensorEngine().get(meta)
    assert first.phase == TaskExecution.SUCCEEDED
    # The answer never reached FlytePropeller; it pokes again (maybe another replica) with the same meta.
    second_id = sqs.send_message(QueueUrl=queue_url, MessageBody="second")["MessageId"]
    again = await SensorEngine().get(roundtrip(meta))
    assert again.phase == TaskExecution.SUCCEEDED
    assert [m.message_id for m in outputs(sensor, first)] == [first_id]
    assert [m.message_id for m in outputs(sensor, again)] == [first_id], "the same delivery, not a new one"
    left = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [m["MessageId"] for m in left] == [second_id], "the second message was neither taken nor lost"


async def test_crash_between_record_and_delete_is_finished_by_the_next_poke(
    moto: Any, sqs: Any, queue_url: str, output_prefix: str, engine: SensorEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sensor = sensor_for(moto, queue_url)
    meta = await start(engine, sensor, output_prefix)
    sent = sqs.send_message(QueueUrl=queue_url, MessageBody="once")["MessageId"]

    # Inject a fault no server produces on demand: the connection drops during the delete.
    from aiobotocore.client import AioBaseClient

    real = AioBaseClient._make_api_call
    calls = {"deletes": 0}

    async def flaky(self: Any, operation: str, params: Any) -> Any:
        if operation == "DeleteMessageBatch":
            calls["deletes"] += 1
            if calls["deletes"] == 1:
                raise ConnectionResetError("connection reset during delete")
        return await real(self, operation, params)

    monkeypatch.setattr(AioBaseClient, "_make_api_call", flaky)
    failed = await engine.get(meta)
    assert failed.phase == TaskExecution.RUNNING and "delete" in (failed.message or ""), failed.message
    assert await read_outputs(outputs_path(output_prefix)) is not None, "outputs were recorded before the delete"

    done = await engine.get(meta)
    assert done.phase == TaskExecution.SUCCEEDED
    assert [m.message_id for m in outputs(sensor, done)] == [sent]
    assert calls["deletes"] == 2
    assert queue_size(sqs, queue_url) == 0, "deleted for good, not merely invisible"


async def test_without_delete_messages_come_back(moto: Any, sqs: Any, queue_url: str, output_prefix: str) -> None:
    sensor = sensor_for(moto, queue_url, delete_on_receive=False, visibility_timeout=0)
    meta = await start(SensorEngine(), sensor, output_prefix)
    sqs.send_message(QueueUrl=queue_url, MessageBody="keep me")
    assert (await SensorEngine().get(meta)).phase == TaskExecution.SUCCEEDED
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=queue_url)["Messages"]] == ["keep me"]


async def test_missing_queue_fails_with_a_readable_message(moto: Any, output_prefix: str, engine: SensorEngine) -> None:
    sensor = sensor_for(moto, f"{moto.endpoint_url}/123456789012/no-such-queue")
    meta = await start(engine, sensor, output_prefix)
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.FAILED
    assert "NonExistentQueue" in (resource.message or "") or "QueueDoesNotExist" in (resource.message or "")


async def test_unreachable_endpoint_keeps_the_sensor_running(output_prefix: str, engine: SensorEngine) -> None:
    config = SQSSensorConfig(
        queue_url="http://127.0.0.1:9/123456789012/q", endpoint_url="http://127.0.0.1:9", region="us-east-1"
    )
    sensor = SQSSensor(name="sqs_unreachable", sensor_config=config)
    meta = await start(engine, sensor, output_prefix)
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.RUNNING
    assert "poke error 1/" in (resource.message or "") and "SQS receive failed" in (resource.message or "")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"queue_url": "not a url"}, "queue_url"),
        ({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "wait_seconds": 20}, "GetTask deadline"),
        ({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "max_messages": 11}, "1-10"),
        ({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "json_path": "a..b"}, "json_path"),
        ({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "body_regex": "("}, "does not compile"),
        ({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "region": "moon"}, "region"),
        ({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "wait_seconds": "1"}, "expected int"),
        ({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "queue": "x"}, "unknown field"),
        ({"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "credentials_secret": "../x"}, "secret name"),
    ],
)
async def test_malformed_config_is_invalid_at_create(
    engine: SensorEngine, config: dict[str, Any], message: str
) -> None:
    template = template_of(SQSSensor(name="sqs_bad", sensor_config=SQSSensorConfig(queue_url="http://h/1/q")))
    template.custom["sensor_config"] = config
    with pytest.raises(InvalidTaskError, match=message):
        await engine.create(template, "/tmp/sqs-out", None)


async def test_credentials_from_a_named_secret_never_travel(
    moto: Any, sqs: Any, queue_url: str, output_prefix: str, engine: SensorEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = json.dumps({"aws_access_key_id": "AKIDSECRETISH", "aws_secret_access_key": "s3cr3t-value"})
    monkeypatch.setenv("FLYTEAGENTS_SECRET_SQS_KEYS", secret)
    sensor = sensor_for(moto, queue_url, credentials_secret="sqs-keys")
    meta = await start(engine, sensor, output_prefix)
    assert b"s3cr3t" not in meta.encode() and b"AKIDSECRETISH" not in meta.encode()
    sqs.send_message(QueueUrl=queue_url, MessageBody="hi")
    assert (await engine.get(meta)).phase == TaskExecution.SUCCEEDED

    monkeypatch.delenv("FLYTEAGENTS_SECRET_SQS_KEYS")
    monkeypatch.setenv("FLYTEAGENTS_SECRETS_DIR", "/nonexistent")
    other = sensor_for(moto, queue_url, credentials_secret="sqs-keys-missing")
    resource = await engine.get(await start(engine, other, output_prefix + "x"))
    assert resource.phase == TaskExecution.FAILED and "sqs-keys-missing" in (resource.message or "")


async def test_pokes_share_one_client(moto: Any, sqs: Any, output_prefix: str, engine: SensorEngine) -> None:
    from flyteagents_aws._clients import _CLIENTS

    urls = [sqs.create_queue(QueueName=f"share-{uuid.uuid4().hex[:8]}")["QueueUrl"] for _ in range(3)]
    metas = [await start(engine, sensor_for(moto, u), f"{output_prefix}/{i}") for i, u in enumerate(urls * 5)]
    await engine.get(metas[0])
    before = _CLIENTS.clients()
    results = await asyncio.gather(*(engine.get(m) for m in metas))
    assert {r.phase for r in results} == {TaskExecution.RUNNING}
    after = _CLIENTS.clients()
    assert before and [id(c) for c in after] == [id(c) for c in before], "every poke reuses its settings' client"


async def test_each_flyte2_tasks_own_credentials_get_their_own_client(
    moto: Any, sqs: Any, queue_url: str, output_prefix: str, engine: SensorEngine
) -> None:
    from flyteagents_aws._clients import _CLIENTS

    def keys(who: str) -> str:
        return json.dumps({"aws_access_key_id": f"AKID{who}", "aws_secret_access_key": f"secret-of-{who}"})

    sensor = sensor_for(moto, queue_url, credentials_secret="sqs-keys")
    with flyte_connection({"sqs-keys": keys("A")}):  # the secret named sqs-keys, as tenant A's Connection sends it
        meta = await start(engine, sensor, output_prefix)
        assert (await engine.get(meta)).phase == TaskExecution.RUNNING
        before = len(_CLIENTS.clients())
        await engine.get(meta)
        assert len(_CLIENTS.clients()) == before  # the same credentials reuse their client
    with flyte_connection({"sqs-keys": keys("B")}):
        await engine.get(meta)
    assert len(_CLIENTS.clients()) == before + 1  # tenant B's credentials never ride on tenant A's client
    assert b"secret-of" not in meta.encode()


# Outputs reach the next task in a local workflow run.
@task
def bodies(messages: list[SQSMessage]) -> str:
    return ",".join(m.body for m in messages)


def test_outputs_reach_the_next_task_in_a_local_workflow(moto: Any, sqs: Any, queue_url: str) -> None:
    wait = SQSSensor(
        name="wait_for_sqs",
        sensor_config=SQSSensorConfig(queue_url=queue_url, endpoint_url=moto.endpoint_url, wait_seconds=1),
        poke_interval=0.2,
        timeout=30,
    )

    @workflow
    def wf() -> str:
        return bodies(messages=wait())

    sender = threading.Timer(
        1.0,
        lambda: boto3.client("sqs", endpoint_url=moto.endpoint_url, **moto.credentials).send_message(
            QueueUrl=queue_url, MessageBody="for the next task"
        ),
    )
    sender.start()
    try:
        assert wf() == "for the next task"
    finally:
        sender.cancel()


async def test_sqs_clients_kept_per_loop_are_bounded_whatever_the_templates_ask_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Region and endpoint come from task templates: one client each, but not without end on the service's loop."""
    from flyteagents_aws._clients import _CLIENTS, sqs_client

    assert _CLIENTS.max_size is not None
    monkeypatch.setattr(_CLIENTS, "max_size", 3)  # the same eviction as at 64, sooner
    for i in range(8):
        await sqs_client("us-east-1", f"http://127.0.0.1:{i + 1}", None)
    assert len(_CLIENTS.clients()) == 3
    await _CLIENTS.aclose()
