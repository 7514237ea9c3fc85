"""Wait for an SQS message with an SQSSensor, then hand it to the next task; run locally.

    python examples/sqs_sensor.py

With ``SQS_QUEUE_URL`` set, it waits on that queue (AWS credentials and region from the
standard chain: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ...)
for a JSON message whose ``event`` is ``"uploaded"``; a queue URL on a host that is not AWS
(LocalStack, moto) is reached at that host. Without, it starts a local
``moto_server`` (``pip install flyteagents-aws[test]``), creates a queue and sends a few
messages a second later; only the matching one is taken off the queue.
"""

from __future__ import annotations

import json
import os
import threading
import time

import boto3
from flyteagents_aws import SQSMessage, SQSSensor, SQSSensorConfig
from flytekit import task, workflow


@task
def process(messages: list[SQSMessage]) -> str:
    body = json.loads(messages[0].body)
    return f"processing {body['key']} (message {messages[0].message_id[:8]})"


def build(queue_url: str, endpoint_url: str | None = None):
    wait_for_upload = SQSSensor(
        name="wait_for_upload",
        sensor_config=SQSSensorConfig(
            queue_url=queue_url, endpoint_url=endpoint_url, json_path="$.event", json_value="uploaded", wait_seconds=1
        ),
        poke_interval=0.5,
        timeout=120,
    )

    @workflow
    def wf() -> str:
        return process(messages=wait_for_upload())

    return wf


def main() -> None:
    queue_url = os.environ.get("SQS_QUEUE_URL")
    if queue_url:
        print(build(queue_url)())
        return
    from flyteagents.testing import MotoServer

    with MotoServer() as moto:
        os.environ.update(moto.env)
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint_url, **moto.credentials)
        url = sqs.create_queue(QueueName="uploads")["QueueUrl"]

        def send_later() -> None:
            time.sleep(1.5)
            for body in ({"event": "deleted", "key": "a.csv"}, {"event": "uploaded", "key": "b.csv"}):
                sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))

        sender = threading.Thread(target=send_later)
        sender.start()
        started = time.monotonic()
        print(build(url, moto.endpoint_url)())
        print(f"found in {time.monotonic() - started:.1f}s")
        sender.join()
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        # The non-matching message stays, hidden until its visibility timeout ends.
        print(f"left on the queue: {sum(int(attrs[n]) for n in names)} (the 'deleted' event)")


if __name__ == "__main__":
    main()
