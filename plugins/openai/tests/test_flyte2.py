"""ChatGPTTask for Flyte 2: locally, and in its pod, where flyte's entrypoint runs it through the service.

Flyte 2 has no sync connector service: the task is a Python task that calls the agent from its
own process. The pod test runs flyte's own task entrypoint (``load_and_run_task``, what the
``a0`` command runs) in a process of its own, with ``FLYTEAGENTS_ENDPOINT`` pointing at
``flyteagents serve``, which answers through its sync service on the fake OpenAI server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flyte
import flyte2_chat as c
import pytest
from flyte._internal.runtime import convert, io

from flyteagents.testing.flyte2 import AgentService, serialize

TESTS = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def initialized():
    flyte.init()


def test_a_local_run_asks_the_agent_and_the_answer_reaches_the_next_task(chatgpt_agent, fake_openai):
    run = flyte.with_runcontext(mode="local").run
    assert run(c.ask, message="hello").outputs()[0] == "echo: hello"
    assert run(c.ask_politely, message="hi").outputs()[0] == "(be polite) echo: hi"
    assert run(c.shout, question="why").outputs()[0] == "ECHO: WHY"


def test_its_template_is_a_python_task_flytes_entrypoint_finds_by_name():
    template = serialize(c.ask)
    assert template.type == "python"  # Flyte 2 runs it in a pod: it has no sync connector service
    args = list(template.container.args)
    at = args.index("--resolver")
    assert args[at + 1 :] == ["flyteagents.flyte2.TaskResolver", "mod", "flyte2_chat", "instance", "ask"]
    assert dict(template.custom)["chatgpt_config"]["model"] == "gpt-4o-mini"
    assert template.metadata.retries.retries == 1


POD = """
import asyncio, sys
from flyte._internal.runtime.entrypoints import load_and_run_task
from flyte.models import ActionID, RawDataPath

resolver, *resolver_args = sys.argv[1:-1]
base = sys.argv[-1]
asyncio.run(load_and_run_task(
    action=ActionID(name="a1", run_name="r1", project="p", domain="d", org="o"),
    raw_data_path=RawDataPath(path=base + "/raw"),
    output_path=base + "/out",
    run_base_dir=base,
    version="v1",
    controller=None,
    resolver=resolver,
    resolver_args=resolver_args,
    input_path=base + "/inputs.pb",
))
"""


def test_in_its_pod_it_asks_the_agent_service(fake_openai, api_key, tmp_path):
    template = serialize(c.ask)
    args = list(template.container.args)
    resolver_args = args[args.index("--resolver") + 1 :]

    async def upload_inputs() -> None:
        inputs = await convert.convert_from_native_to_inputs(c.ask.native_interface, message="from the pod")
        await io.upload_inputs(inputs, str(tmp_path / "inputs.pb"))

    (tmp_path / "out").mkdir()  # object storage in a cluster; a local directory here
    asyncio.run(upload_inputs())
    service_env = {"FLYTEAGENTS_OPENAI_BASE_URL": fake_openai.base_url, "FLYTE_OPENAI_API_KEY": api_key}
    with AgentService(env=service_env) as service:
        pod_env = {k: v for k, v in os.environ.items() if k not in ("FLYTE_OPENAI_API_KEY",)}
        pod_env.update(FLYTEAGENTS_ENDPOINT=service.address, PYTHONPATH=str(TESTS))
        pod = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(POD), *resolver_args, str(tmp_path)],
            env=pod_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert pod.returncode == 0, pod.stderr[-3000:]
    assert f"via agent service {service.address}" in pod.stderr

    async def read_outputs() -> str:
        outputs = await io.load_outputs(io.outputs_path(str(tmp_path / "out")))
        return await convert.convert_outputs_to_native(c.ask.native_interface, outputs)

    assert asyncio.run(read_outputs()) == "echo: from the pod"
