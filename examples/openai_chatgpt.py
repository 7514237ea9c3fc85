"""ChatGPT tasks and an OpenAI batch in one workflow, run locally.

    python examples/openai_chatgpt.py
    pyflyte run examples/openai_chatgpt.py wf --topic "flyte agents"

With ``OPENAI_BASE_URL`` unset, the example starts the fake OpenAI server from the
plugin's tests on 127.0.0.1 and uses its test key, so it runs with no account. To use a
real endpoint (OpenAI, vLLM, llama.cpp server, Ollama), set ``OPENAI_BASE_URL`` and the
secret ``FLYTE_OPENAI_API_KEY`` (an environment variable of that name locally), and
``FLYTEAGENTS_EXAMPLE_MODEL`` to a model it serves.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from flyteagents_openai import BatchEndpointTask, ChatGPTTask
from flytekit import task, workflow
from flytekit.types.file import JSONLFile

if not os.environ.get("OPENAI_BASE_URL"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "openai" / "tests"))
    from fake_openai import FakeOpenAI

    _server = FakeOpenAI(api_keys=("sk-example",), record=False).start()
    os.environ["OPENAI_BASE_URL"] = _server.base_url
    os.environ["FLYTE_OPENAI_API_KEY"] = "sk-example"

MODEL = os.environ.get("FLYTEAGENTS_EXAMPLE_MODEL", "gpt-4o-mini")

outline = ChatGPTTask(
    name="outline",
    chatgpt_config={"model": MODEL, "temperature": 0},
    system_prompt="Explain the topic in one short sentence.",
)
title = ChatGPTTask(name="title", chatgpt_config={"model": MODEL})
answer_all = BatchEndpointTask(name="answer_all", config={"metadata": {"example": "openai_chatgpt"}})


@task
def questions(topic: str, summary: str) -> JSONLFile:
    """One batch request per question about the topic."""
    path = Path(tempfile.mkdtemp()) / "requests.jsonl"
    asks = [f"What is {topic}?", f"Why use {topic}?", f"Summarize: {summary}"]
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": ask}]},
        }
        for i, ask in enumerate(asks)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return JSONLFile(str(path))


@task
def answers(results: JSONLFile) -> list[str]:
    """The reply text of each batch request, in the order the batch returned them."""
    out = []
    for line in Path(results.download()).read_text().splitlines():
        item = json.loads(line)
        out.append(item["response"]["body"]["choices"][0]["message"]["content"])
    return out


@workflow
def wf(topic: str = "flyte agents") -> tuple[str, str, list[str]]:
    summary = outline(message=topic)
    heading = title(message=summary)
    batch = answer_all(jsonl_in=questions(topic=topic, summary=summary))
    return summary, heading, answers(results=batch.output_file)


if __name__ == "__main__":
    summary, heading, replies = wf()
    print(f"summary={summary!r}")
    print(f"title={heading!r}")
    for reply in replies:
        print(f"batch: {reply!r}")
