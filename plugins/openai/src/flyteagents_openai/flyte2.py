"""ChatGPTTask for Flyte 2 (the ``flyte`` SDK): a chat completion answered by the same ChatGPTAgent.

Flyte 2 has no sync connector service, so this is an ordinary Python task whose process (on
your machine, or its pod in a cluster) calls the agent itself: the agent's ``do`` in-process,
or, with ``FLYTEAGENTS_ENDPOINT`` in the task's environment, the agent service's sync call.
The pod's image needs ``flyteagents-openai`` (and the ``FLYTE_OPENAI_API_KEY`` secret, unless
the service answers).
"""

from __future__ import annotations

from typing import Any

from flyteagents.flyte2 import SyncAgentTask, split_options

from ._chatgpt import ChatGPTTask as _FlytekitChatGPTTask

__all__ = ["ChatGPTTask"]


class ChatGPTTask(SyncAgentTask):
    """A Flyte 2 task answered by a chat completion: input ``message: str``, output ``o0: str``.

    The arguments are those of ``flyteagents_openai.ChatGPTTask``, plus flyte task options
    (``image``, ``env_vars``, ``secrets``, ``retries``, ...). Assign it to a module-level
    name: the pod finds it there.

    Example:
        ```python
        ask = ChatGPTTask(
            name="ask",
            chatgpt_config={"model": "gpt-4o-mini", "temperature": 0},
            image=flyte.Image.from_debian_base().with_pip_packages("flyteagents-openai"),
            secrets=flyte.Secret(key="openai-api-key", as_env_var="FLYTE_OPENAI_API_KEY"),
        )
        env = flyte.TaskEnvironment.from_task("chat", ask)
        ```
    """

    def __init__(
        self,
        name: str,
        chatgpt_config: dict[str, Any],
        openai_organization: str | None = None,
        system_prompt: str | None = None,
        **kwargs: Any,
    ) -> None:
        options, rest = split_options(kwargs)
        task = _FlytekitChatGPTTask(
            name=name,
            chatgpt_config=chatgpt_config,
            openai_organization=openai_organization,
            system_prompt=system_prompt,
            **rest,
        )
        super().__init__(task, **options)
