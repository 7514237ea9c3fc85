"""`flyteagents serve` answering Flyte 2 as operators run it: reflection, health, metrics, --protocols."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.service import agent_pb2_grpc
from flyteidl2.connector import connector_pb2, service_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa
from service_process import BIN, Service
from test_service_process import CHECK, _grpcurl, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("serve-v2"), "service_serve_agents").ready()
    yield svc
    svc.stop()


def test_agents_command_lists_what_flyte2_sees(both):
    listed = run(str(BIN / "flyteagents"), "agents", "--endpoint", both.address, "--protocol", "v2")
    assert listed.returncode == 0, listed.stderr
    assert "svc_job (0)" in listed.stdout and "sensor (0)" in listed.stdout
    assert "svc_echo" not in listed.stdout  # a sync agent: Flyte 2 cannot call it


def test_grpcurl_lists_and_calls_the_connector_services_through_reflection(both):
    grpcurl = _grpcurl()
    listed = run(grpcurl, "-plaintext", both.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert {
        "flyteidl.service.AsyncAgentService",
        "flyteidl2.connector.AsyncConnectorService",
        "flyteidl2.connector.ConnectorMetadataService",
    } <= set(listed.stdout.split())
    for name in ("flyteidl2.connector.AsyncConnectorService", "flyteidl2.connector.ConnectorMetadataService"):
        health = run(grpcurl, "-plaintext", "-d", json.dumps({"service": name}), both.address, CHECK)
        assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr
    called = run(grpcurl, "-plaintext", both.address, "flyteidl2.connector.ConnectorMetadataService/ListConnectors")
    names = {c["name"] for c in json.loads(called.stdout)["connectors"]}
    assert sa.JobAgent.name in names and "Sensor" in names and sa.EchoAgent.name not in names


@pytest.mark.asyncio(loop_scope="session")
async def test_scraped_metrics_carry_the_protocol_label(both):
    async with grpc.aio.insecure_channel(both.address) as channel:
        stub = service_pb2_grpc.AsyncConnectorServiceStub(channel)
        created = await stub.CreateTask(
            connector_pb2.CreateTaskRequest.FromString(sa.create_request(sa.JOB_TYPE, outcome="ok").SerializeToString())
        )
        category = connector_pb2.TaskCategory(name=sa.JOB_TYPE)
        await stub.GetTask(connector_pb2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta))
    body = both.metrics()
    label = f'flyteagents_requests_total{{code="OK",operation="get",protocol="v2",task_type="{sa.JOB_TYPE}"}} 1.0'
    assert label in body
    assert 'flyteagents_requests_in_flight{operation="get",protocol="v2"} 0.0' in body


@pytest.mark.asyncio(loop_scope="session")
async def test_protocols_turns_v1_off(tmp_path):
    svc = Service(tmp_path, "service_serve_agents", env={"FLYTEAGENTS_PROTOCOLS": "v2"}).ready()
    try:
        async with grpc.aio.insecure_channel(svc.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await agent_pb2_grpc.AgentMetadataServiceStub(channel).ListAgents(agent_pb2.ListAgentsRequest())
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            stub = service_pb2_grpc.ConnectorMetadataServiceStub(channel)
            listed = await stub.ListConnectors(connector_pb2.ListConnectorsRequest())
            assert sa.JobAgent.name in {c.name for c in listed.connectors}
    finally:
        svc.stop()


def test_an_unknown_protocol_is_refused_before_serving():
    done = subprocess.run(
        [str(BIN / "flyteagents"), "serve", "--port", "0", "--metrics-port", "-1", "--protocols", "v1,v3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Invalid value for --protocols: choose from v1, v2, got 'v1,v3'" in done.stderr
