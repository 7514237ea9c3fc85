"""ExampleJobAgent: submits a job to a REST jobs API, polls it, cancels it.

The API it speaks: ``POST /jobs`` ``{"command", "idempotency_key"}`` -> ``{"id"}``;
``GET /jobs/{id}`` -> ``{"state": "PENDING" | "RUNNING" | "DONE" | "FAILED", "result", "error"}``;
``POST /jobs/{id}/cancel``. Every request carries ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from flyteagents import AsyncAgentBase, ExternalServiceError, InvalidTaskError, Resource, ResourceMeta
from flyteagents.plugin import ClientPool, check_secret_name, get_secret, secret_fingerprint, task_execution_id

__all__ = ["TASK_TYPE", "ExampleJobAgent", "JobMeta"]

TASK_TYPE = "example_job"
DEFAULT_TOKEN_SECRET = "example-token"
#: Seconds one request to the jobs API may take: well under propeller's 10 s deadline.
REQUEST_TIMEOUT = 5.0
_PHASES = {
    "PENDING": TaskExecution.QUEUED,
    "RUNNING": TaskExecution.RUNNING,
    "DONE": TaskExecution.SUCCEEDED,
    "FAILED": TaskExecution.FAILED,
}


@dataclass
class JobMeta(ResourceMeta):
    """What identifies a submitted job: where it runs, its id, and the secret's name (never its value)."""

    base_url: str
    job_id: str
    token_secret: str


def _open_session(key: tuple[str, str, str], token: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=key[0],
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


class ExampleJobAgent(AsyncAgentBase):
    """Serves task type ``example_job``: one job on the jobs API per task execution attempt."""

    name = "Example Job Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name=TASK_TYPE, metadata_type=JobMeta)
        # One HTTP session per event loop, API and token (64 at most: templates name the API); closed
        # when its loop or the service ends.
        self.sessions: ClientPool[tuple[str, str, str], aiohttp.ClientSession] = ClientPool(max_size=64)

    async def _session(self, base_url: str, token_secret: str) -> aiohttp.ClientSession:
        token = get_secret(token_secret)  # read on each call: a rotated token is seen at once
        key = (base_url, token_secret, secret_fingerprint(token))  # a rotated token gets a new session
        return await self.sessions.get(key, lambda: _open_session(key, token))

    async def _call(self, method: str, meta_or_url: tuple[str, str], path: str, body: Any = None) -> Any:
        session = await self._session(*meta_or_url)
        try:
            async with session.request(method, path, json=body) as response:
                if response.status >= 500 or response.status == 429:
                    raise ExternalServiceError(f"jobs API answered {response.status}", retryable=True)
                if response.status >= 400:
                    raise InvalidTaskError(f"jobs API refused {method} {path}: {response.status}")
                return await response.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ExternalServiceError(f"jobs API unreachable: {type(exc).__name__}", retryable=True) from None

    async def create(  # type: ignore[override]
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        task_execution_metadata: TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> JobMeta:
        """Submit the job; a repeated create for the same attempt gets the job it started."""
        custom = task_template.custom or {}
        base_url, command = custom.get("base_url"), custom.get("command")
        if not isinstance(base_url, str) or not isinstance(command, str):
            raise InvalidTaskError("the template's custom needs base_url and command strings")
        token_secret = custom.get("token_secret") or DEFAULT_TOKEN_SECRET
        check_secret_name(token_secret, "token_secret")
        body = {"command": command, "idempotency_key": task_execution_id(task_execution_metadata)}
        answer = await self._call("POST", (base_url, token_secret), "/jobs", body)
        return JobMeta(base_url=base_url, job_id=str(answer["id"]), token_secret=token_secret)

    async def get(self, resource_meta: JobMeta, **kwargs: Any) -> Resource:  # type: ignore[override]
        """The job's state as a Flyte phase; its result as the output ``result`` once DONE."""
        meta = resource_meta
        job = await self._call("GET", (meta.base_url, meta.token_secret), f"/jobs/{meta.job_id}")
        phase = _PHASES.get(job.get("state"), TaskExecution.RUNNING)
        if phase == TaskExecution.SUCCEEDED:
            return Resource(phase=phase, outputs={"result": int(job["result"])})
        return Resource(phase=phase, message=job.get("error") or job.get("state"))

    async def delete(self, resource_meta: JobMeta, **kwargs: Any) -> None:  # type: ignore[override]
        """Cancel the job."""
        meta = resource_meta
        await self._call("POST", (meta.base_url, meta.token_secret), f"/jobs/{meta.job_id}/cancel")
