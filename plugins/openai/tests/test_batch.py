"""The Batch async agent against a fake OpenAI server, through the real openai client."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from flyteagents_openai import BatchEndpointAgent, BatchEndpointTask, BatchMeta
from flyteagents_openai._literals import string_literal
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import task, workflow
from flytekit.core.base_task import TaskMetadata
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata
from flytekit.types.file import FlyteFile, JSONLFile

from flyteagents import AgentTimeoutError, ExternalServiceError, InvalidTaskError
from flyteagents.testing import execution_metadata, template_of

answer_all = BatchEndpointTask(name="answer_all", config={"metadata": {"purpose": "test"}})
held = BatchEndpointTask(
    name="held", config={"metadata": {"hold": "true"}}, metadata=TaskMetadata(timeout=timedelta(seconds=0.5))
)


@task
def contents(results: JSONLFile) -> list[str]:
    lines = Path(results.download()).read_text().splitlines()
    return [json.loads(line)["response"]["body"]["choices"][0]["message"]["content"] for line in lines]


@workflow
def answer_then_read(requests: JSONLFile) -> tuple[list[str], dict]:
    out = answer_all(jsonl_in=requests)
    return contents(results=out.output_file), out.result


def requests_file(tmp_path: Path, *questions: str, model: str = "gpt-test") -> Path:
    path = tmp_path / "requests.jsonl"
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": q}]},
        }
        for i, q in enumerate(questions)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def file_inputs(path: Path) -> LiteralMap:
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    ctx = FlyteContextManager.current_context()
    return TypeEngine.dict_to_literal_map(ctx, {"jsonl_in": JSONLFile(str(path))}, {"jsonl_in": JSONLFile})


def attempt(name: str, retry: int = 0) -> TaskExecutionMetadata:
    return execution_metadata(name, attempt=retry, domain="d", task="answer_all")


async def poll(agent: BatchEndpointAgent, meta: BatchMeta, limit: int = 10):
    phases = []
    for _ in range(limit):
        resource = await agent.get(BatchMeta.decode(meta.encode()))
        phases.append(resource.phase_name)
        if resource.phase in (TaskExecution.SUCCEEDED, TaskExecution.FAILED, TaskExecution.ABORTED):
            return resource, phases
    raise AssertionError(f"batch never ended: {phases}")


def test_batch_runs_and_its_output_file_reaches_the_next_task(
    batch_agent: BatchEndpointAgent, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    answers, result = answer_then_read(requests=JSONLFile(str(requests_file(tmp_path, "one", "two", "three"))))
    assert answers == ["echo: one", "echo: two", "echo: three"]
    assert result["status"] == "completed"
    assert result["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert result["metadata"]["purpose"] == "test"
    batch = fake_openai.batches[result["id"]]
    assert fake_openai.files[batch["input_file_id"]]["purpose"] == "batch"


async def test_phases_resource_meta_and_outputs(
    batch_agent: BatchEndpointAgent, fake_openai: FakeOpenAI, tmp_path: Path, api_key: str
) -> None:
    out = tmp_path / "outputs"
    meta = await batch_agent.create(template_of(answer_all), str(out), file_inputs(requests_file(tmp_path, "hi")))
    raw = meta.encode()
    assert json.loads(raw) == {
        "batch_id": meta.batch_id,
        "organization": None,
        "output_prefix": str(out),
        "outputs": ["output_file", "result"],
    }
    assert api_key.encode() not in raw
    resource, phases = await poll(batch_agent, meta)
    assert phases == ["RUNNING", "RUNNING", "SUCCEEDED"]  # in_progress, finalizing, completed
    assert resource.custom_info["request_counts"]["completed"] == 1
    blob = resource.outputs.literals["output_file"].scalar.blob
    assert blob.metadata.type.format == "jsonl"
    assert blob.uri == f"{out}/{meta.batch_id}/output_file.jsonl"
    assert "echo: hi" in open(blob.uri).read()  # noqa: ASYNC230


async def test_cancel_ends_aborted(batch_agent: BatchEndpointAgent, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    meta = await batch_agent.create(template_of(held), str(tmp_path), file_inputs(requests_file(tmp_path, "wait")))
    resource = await batch_agent.get(meta)
    assert resource.phase == TaskExecution.RUNNING
    await batch_agent.delete(meta)
    assert fake_openai.batches[meta.batch_id]["status"] == "cancelling"
    resource, phases = await poll(batch_agent, meta)
    assert phases == ["RUNNING", "ABORTED"]  # cancelling is still winding down
    assert resource.message == f"batch {meta.batch_id} was cancelled"
    await batch_agent.delete(meta)  # deleting a finished batch is not an error (409)...
    fake_openai.inject(400, path_prefix=f"/batches/{meta.batch_id}/cancel")
    await batch_agent.delete(meta)  # ...nor when the server says 400
    fake_openai.inject(400, path_prefix=f"/batches/{meta.batch_id}/cancel")
    fake_openai.batches[meta.batch_id]["status"] = "in_progress"
    with pytest.raises(InvalidTaskError, match="OpenAI error 400"):
        await batch_agent.delete(meta)  # a 400 for a live batch is a real error


def test_local_timeout_cancels_the_batch(batch_agent: BatchEndpointAgent, fake_openai: FakeOpenAI, tmp_path) -> None:
    before = set(fake_openai.batches)
    with pytest.raises(AgentTimeoutError):
        held(jsonl_in=JSONLFile(str(requests_file(tmp_path, "never"))))
    (new,) = set(fake_openai.batches) - before
    assert fake_openai.batches[new]["status"] == "cancelling"


async def test_create_is_idempotent_per_attempt(
    batch_agent: BatchEndpointAgent, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    template, inputs = template_of(answer_all), file_inputs(requests_file(tmp_path, "once"))
    first = await batch_agent.create(template, str(tmp_path), inputs, task_execution_metadata=attempt("exec-a"))
    again = await batch_agent.create(template, str(tmp_path), inputs, task_execution_metadata=attempt("exec-a"))
    retry = await batch_agent.create(template, str(tmp_path), inputs, task_execution_metadata=attempt("exec-a", 1))
    assert first.batch_id == again.batch_id
    assert retry.batch_id != first.batch_id
    tags = [b["metadata"].get("flyte_execution") for b in fake_openai.batches.values()]
    assert tags.count("p/d/exec-a/n0/0") == 1
    assert tags.count("p/d/exec-a/n0/1") == 1


async def test_invalid_input_file_fails_with_openai_message(batch_agent: BatchEndpointAgent, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a"}\nnot json\n')
    meta = await batch_agent.create(template_of(answer_all), str(tmp_path), file_inputs(bad))
    resource, phases = await poll(batch_agent, meta)
    assert phases == ["FAILED"]
    assert resource.message == f"batch {meta.batch_id} failed: Line 2 is not valid JSON. (line 2)"


async def test_partial_failures_succeed_with_a_count(batch_agent: BatchEndpointAgent, tmp_path: Path) -> None:
    path = requests_file(tmp_path, "ok")
    with path.open("a") as f:
        f.write(
            json.dumps(
                {
                    "custom_id": "x",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "fail-400", "messages": []},
                }
            )
            + "\n"
        )
    meta = await batch_agent.create(template_of(answer_all), str(tmp_path), file_inputs(path))
    resource, _ = await poll(batch_agent, meta)
    assert resource.phase == TaskExecution.SUCCEEDED
    assert resource.message.endswith("1 request(s) failed")
    only_failures = requests_file(tmp_path / "", "x", model="fail-400")
    meta = await batch_agent.create(template_of(answer_all), str(tmp_path), file_inputs(only_failures))
    resource, _ = await poll(batch_agent, meta)
    assert resource.phase == TaskExecution.FAILED
    assert "none of its requests succeeded (1 failed" in resource.message


async def test_flytekit_batch_template_is_served(
    batch_agent: BatchEndpointAgent,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    api_key: str,
    flytekit_plugin: Callable[[str], Path],
) -> None:
    flytekit_plugin("openai")
    from flytekitplugins.openai import BatchEndpointTask as FlytekitBatchTask

    legacy = FlytekitBatchTask(name="legacy_batch", config={}, openai_organization="org-legacy")
    uploaded = fake_openai._store_file(requests_file(tmp_path, "legacy").read_bytes(), "in.jsonl", "batch")
    inputs = LiteralMap({"input_file_id": string_literal(uploaded["id"])})
    meta = await batch_agent.create(template_of(legacy), str(tmp_path), inputs)
    assert meta.outputs == ["result"] and meta.organization == "org-legacy"
    resource, _ = await poll(batch_agent, meta)
    assert set(resource.outputs.literals) == {"result"}
    assert fake_openai.batches[meta.batch_id]["input_file_id"] == uploaded["id"]
    assert fake_openai.requests[-1]["headers"]["openai-organization"] == "org-legacy"


async def test_rate_limit_is_retryable(batch_agent: BatchEndpointAgent, fake_openai: FakeOpenAI, tmp_path) -> None:
    meta = await batch_agent.create(template_of(answer_all), str(tmp_path), file_inputs(requests_file(tmp_path, "r")))
    fake_openai.inject(429, path_prefix="/batches/")
    with pytest.raises(ExternalServiceError, match="OpenAI error 429") as info:
        await batch_agent.get(meta)
    assert info.value.retryable
    fake_openai.inject(503, path_prefix="/batches")
    with pytest.raises(ExternalServiceError, match="OpenAI error 503") as info:
        await batch_agent.create(template_of(answer_all), str(tmp_path), file_inputs(requests_file(tmp_path, "r")))
    assert info.value.retryable
    resource, _ = await poll(batch_agent, meta)  # the fault passed: polling goes on
    assert resource.phase == TaskExecution.SUCCEEDED


async def test_bad_key_is_not_retryable_and_not_logged(
    batch_agent: BatchEndpointAgent,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path,
) -> None:
    bad_key = "sk-batch-wrong-77aa88bb-DO-NOT-LOG"
    monkeypatch.setenv("FLYTE_OPENAI_API_KEY", bad_key)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ExternalServiceError, match="Incorrect API key provided") as info:
        await batch_agent.create(template_of(answer_all), str(tmp_path), file_inputs(requests_file(tmp_path, "k")))
    assert not info.value.retryable
    assert bad_key not in str(info.value)
    assert caplog.records
    for record in caplog.records:
        assert bad_key not in record.getMessage()


async def test_resource_meta_is_strict_json() -> None:
    from flyteagents import InvalidResourceMetaError

    with pytest.raises(InvalidResourceMetaError):
        BatchMeta.decode(b"\x80\x04\x95cloudpickle")
    with pytest.raises(InvalidResourceMetaError, match="missing field"):
        BatchMeta.decode(b'{"batch_id": "b"}')


async def test_missing_input_is_invalid(batch_agent: BatchEndpointAgent, tmp_path: Path) -> None:
    with pytest.raises(InvalidTaskError, match="jsonl_in"):
        await batch_agent.create(template_of(answer_all), str(tmp_path), LiteralMap({}))


def test_flyte_file_type_matches() -> None:
    assert issubclass(JSONLFile, FlyteFile)
