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

# Show flyteagents_openai.ChatGPTTask in reprs and docs. BatchMeta keeps its module: its
# type hints are resolved there when resource_meta is decoded.
for _name in __all__:
    if _name != "BatchMeta":
        globals()[_name].__module__ = "flyteagents_openai"
del _name
