"""Flyte 2 tasks for tests/test_flyte2.py, importable by name as a pod's entrypoint imports them."""

from __future__ import annotations

import flyte
from flyteagents_openai.flyte2 import ChatGPTTask

ask = ChatGPTTask(name="f2_ask", chatgpt_config={"model": "gpt-4o-mini", "temperature": 0}, retries=1)
ask_politely = ChatGPTTask(name="f2_ask_politely", chatgpt_config={"model": "gpt-4o-mini"}, system_prompt="be polite")
chat = flyte.TaskEnvironment.from_task("f2_chat", ask, ask_politely)
env = flyte.TaskEnvironment(name="f2_chat_flow", depends_on=[chat])


@env.task
async def shout(question: str) -> str:
    answer = await ask(message=question)
    return answer.upper()
