"""ExampleJobTask: the flytekit task a workflow declares; its template carries what the agent needs."""

from __future__ import annotations

from typing import Any

from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface

from flyteagents import AsyncAgentExecutorMixin

from ._agent import TASK_TYPE

__all__ = ["ExampleJobTask"]


class ExampleJobTask(AsyncAgentExecutorMixin, PythonTask):  # type: ignore[misc]
    """Runs ``command`` on the jobs API at ``base_url``; outputs ``result: int``.

    Runs locally through the installed agent (``python wf.py``), or on Flyte through the
    agent service. The token is read from the secret ``token_secret`` where the agent runs.
    """

    def __init__(self, name: str, base_url: str, command: str, token_secret: str | None = None, **kwargs: Any):
        super().__init__(
            task_type=TASK_TYPE,
            name=name,
            task_config=None,
            interface=Interface(outputs={"result": int}),
            **kwargs,
        )
        self._custom = {"base_url": base_url, "command": command, "token_secret": token_secret}

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """The template's custom field: everything but the token itself."""
        return {k: v for k, v in self._custom.items() if v is not None}
