"""flyteagents-openai: OpenAI chat completions as a sync agent and the Batch API as an async agent.

Installing the package registers both agents with flyteagents through entry points
(task types ``chatgpt`` and ``openai-batch``); the tasks run locally as well.
"""

from ._batch import BatchEndpointAgent, BatchEndpointTask, BatchMeta
from ._chatgpt import ChatGPTAgent, ChatGPTTask
from ._settings import OpenAISettings

__all__ = [
    "BatchEndpointAgent",
    "BatchEndpointTask",
    "BatchMeta",
    "ChatGPTAgent",
    "ChatGPTTask",
    "OpenAISettings",
]

for _name in __all__:
    globals()[_name].__module__ = "flyteagents_openai"
del _name
