"""The import boundary between the two SDKs: flytekit users never load `flyte`, and work without it installed.

Each check runs in a fresh interpreter, as a user's program would start. "Without flyte" is a process
whose import system refuses `flyte` and `flyte.*`, as if the package were not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FLYTEKIT_SIDE = [
    "flyteagents",
    "flyteagents.sensor",
    "flyteagents.connectors",
    "flyteagents.testing",
    "flyteagents.server",
    "flyteagents.cli",
    "flyteagents.client",
    "flyteagents_bigquery",
    "flyteagents_aws",
    "flyteagents_kafka",
    "flyteagents_openai",
    "flyteagents_databricks",
]

WITHOUT_FLYTE = """
import importlib.abc, sys

class NoFlyte(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "flyte" or name.startswith("flyte."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoFlyte())
"""


def run(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180, cwd=cwd
    )


def test_the_flytekit_side_and_every_plugin_import_without_loading_flyte():
    imports = "\n".join(f"import {name}" for name in FLYTEKIT_SIDE)
    result = run(f"{imports}\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'flyte'))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_flytekit_workflow_with_a_sensor_runs_where_flyte_is_not_installed(tmp_path):
    (tmp_path / "ready.csv").write_text("a,b\n")
    code = (
        WITHOUT_FLYTE
        + f"""
from flytekit import workflow
from flyteagents.sensor import FileSensor
import flyteagents_bigquery, flyteagents_aws, flyteagents_kafka, flyteagents_openai, flyteagents_databricks

wait = FileSensor(name="wait", poke_interval=0.05, timeout=30)

@workflow
def wf(path: str) -> str:
    return wait(path=path).path

print("found", wf(path={str(tmp_path / "ready.csv")!r}))
"""
    )
    script = tmp_path / "wf.py"  # flytekit reads a workflow's source
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert f"found {tmp_path / 'ready.csv'}" in result.stdout


def test_the_flyte2_layer_says_what_to_install_where_flyte_is_missing():
    modules = [f"flyteagents_{p}.flyte2" for p in ("bigquery", "aws", "kafka", "databricks", "openai")]
    for module in ["flyteagents.flyte2", *modules]:
        code = f"try:\n    import {module}\nexcept ImportError as exc:\n    print('refused:', exc)"
        result = run(WITHOUT_FLYTE + code)
        assert result.returncode == 0, result.stderr
        assert "needs the flyte SDK (Flyte 2)" in result.stdout
        assert "pip install 'flyteagents[flyte2]'" in result.stdout


def test_the_service_serves_flyte2_where_the_flyte_sdk_is_not_installed():
    # The v2 protocol needs only flyteidl2's stubs: an operator's image needs no flyte SDK.
    code = (
        WITHOUT_FLYTE
        + """
import asyncio
from flyteidl2.connector import connector_pb2, service_pb2_grpc
import grpc
from flyteagents import AgentRegistry
from flyteagents.sensor import SensorEngine
from flyteagents.testing import AgentServer

async def main():
    registry = AgentRegistry()
    registry.register(SensorEngine())
    async with AgentServer(registry) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = service_pb2_grpc.ConnectorMetadataServiceStub(channel)
            listed = await stub.ListConnectors(connector_pb2.ListConnectorsRequest())
            print([c.name for c in listed.connectors])

asyncio.run(main())
"""
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert "['Sensor']" in result.stdout
