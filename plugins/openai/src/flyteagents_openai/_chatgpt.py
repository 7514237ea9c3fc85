"""The ChatGPT sync agent (task type ``chatgpt``) and the task that uses it."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import openai
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskTemplate

from flyteagents import InvalidTaskError, Resource, SyncAgentBase, SyncAgentExecutorMixin

from ._clients import ClientCache
from ._errors import classify
from ._literals import string_input, string_literal, task_custom
from ._local import ensure_agent
from ._settings import OpenAISettings

__all__ = ["ChatGPTAgent", "ChatGPTTask"]

logger = logging.getLogger("flyteagents.openai")

TASK_TYPE = "chatgpt"
# Settings that would change what the call returns in a way this task cannot hand back.
_UNSUPPORTED_CONFIG = ("stream", "messages")


class ChatGPTAgent(SyncAgentBase):
    """Answers a ``chatgpt`` task with one chat completion.

    Serves templates made by this package's ChatGPTTask and by flytekitplugins-openai's.
    The API key comes from the secret ``settings.secret_name``; rate limits and server
    errors end the task RETRYABLE_FAILED, a bad key or request FAILED, both with
    OpenAI's message (the key removed).

    Args:
        settings: endpoint, secret, timeout and concurrency; default from the environment.
    """

    name: ClassVar[str] = "OpenAI ChatGPT Agent"

    def __init__(self, settings: OpenAISettings | None = None) -> None:
        super().__init__(task_type_name=TASK_TYPE)
        self.settings = settings or OpenAISettings.from_env()
        self.clients = ClientCache(self.settings)

    async def do(  # type: ignore[override]  # the framework awaits coroutine methods
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        **kwargs: Any,
    ) -> Resource:
        """Send the task's ``message`` (after its system prompt) and return the reply as ``o0``."""
        custom = task_custom(task_template)
        request = _chat_request(custom, string_input(inputs, "message"))
        api_key = self.settings.api_key()
        if not api_key:
            return Resource(
                phase=TaskExecution.FAILED,
                message=f"no OpenAI API key: the secret {self.settings.secret_name} is not set",
            )
        client = await self.clients.client(api_key, custom.get("openai_organization") or None)
        try:
            async with self.clients.limit():
                completion = await client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            failure = classify(exc, api_key)
            logger.warning("chatgpt task %s failed: %s", task_template.id.name, failure.message)
            phase = TaskExecution.RETRYABLE_FAILED if failure.retryable else TaskExecution.FAILED
            return Resource(phase=phase, message=failure.message, custom_info=failure.info())
        if not completion.choices:
            return Resource(phase=TaskExecution.FAILED, message="OpenAI returned no choices")
        content = completion.choices[0].message.content or ""
        return Resource(phase=TaskExecution.SUCCEEDED, outputs=LiteralMap({"o0": string_literal(content)}))

    async def aclose(self) -> None:
        """Close the clients this agent opened on the running event loop."""
        await self.clients.aclose()


def _chat_request(custom: dict[str, Any], message: str) -> dict[str, Any]:
    config = custom.get("chatgpt_config")
    if not isinstance(config, dict) or not config.get("model"):
        raise InvalidTaskError("chatgpt_config must be a mapping with a 'model'")
    bad = [k for k in _UNSUPPORTED_CONFIG if k in config]
    if bad:
        raise InvalidTaskError(f"chatgpt_config must not set {', '.join(bad)}: the task builds the messages")
    messages = []
    system_prompt = custom.get("system_prompt")
    if system_prompt:
        messages.append({"role": "system", "content": str(system_prompt)})
    messages.append({"role": "user", "content": message})
    return {**config, "messages": messages}


class ChatGPTTask(SyncAgentExecutorMixin, PythonTask):
    """A task answered by a chat completion: input ``message: str``, output ``o0: str``.

    Its template is the one flytekitplugins-openai's ChatGPTTask makes (task type
    ``chatgpt``), plus ``system_prompt`` when one is given.

    Example:
        >>> ask = ChatGPTTask(name="ask", chatgpt_config={"model": "gpt-4o-mini", "temperature": 0})
        >>> @workflow
        ... def wf(q: str) -> str:
        ...     return ask(message=q)

    Args:
        name: the task's name.
        chatgpt_config: chat completion parameters; ``model`` is required.
        openai_organization: the OpenAI organization to bill, if not the key's default.
        system_prompt: a system message sent before the user's message.
    """

    _TASK_TYPE = TASK_TYPE

    def __init__(
        self,
        name: str,
        chatgpt_config: dict[str, Any],
        openai_organization: str | None = None,
        system_prompt: str | None = None,
        **kwargs: Any,
    ) -> None:
        if "model" not in chatgpt_config:
            raise ValueError("chatgpt_config needs a 'model'")
        self.chatgpt_config = dict(chatgpt_config)
        self.openai_organization = openai_organization
        self.system_prompt = system_prompt
        super().__init__(
            task_type=self._TASK_TYPE,
            name=name,
            task_config=None,
            interface=Interface(inputs={"message": str}, outputs={"o0": str}),
            **kwargs,
        )

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """The template's custom field."""
        custom: dict[str, Any] = {
            "openai_organization": self.openai_organization,
            "chatgpt_config": self.chatgpt_config,
        }
        if self.system_prompt:
            custom["system_prompt"] = self.system_prompt
        return custom

    def execute(self, **kwargs: Any) -> Any:
        """Run the task locally through the ChatGPT agent (registered on first use)."""
        ensure_agent(TASK_TYPE, ChatGPTAgent)
        return super().execute(**kwargs)
