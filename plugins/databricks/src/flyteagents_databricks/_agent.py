"""DatabricksAgent: runs a task as a Databricks Jobs API 2.1 one-time run."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flyteidl.core.execution_pb2 import TaskExecution, TaskLog
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from flyteagents import AsyncAgentBase, InvalidTaskError, Resource, ResourceMeta, is_terminal_phase, to_phase

from ._auth import DEFAULT_TOKEN_SECRET, Credentials, OAuthTokenCache, resolve_secret
from ._client import DatabricksAPIError, JobsClient, JobsClientPool
from ._settings import DatabricksSettings, normalize_instance
from ._spec import build_submit_request, idempotency_token

__all__ = ["DatabricksAgent", "DatabricksRunMeta", "run_phase"]

logger = logging.getLogger("flyteagents.databricks")

_T = TypeVar("_T")

#: Errors Databricks answers for a run id it does not know.
_NO_SUCH_RUN = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"})
#: What runs/cancel may answer for a run that already finished ("Run is not active").
_NOT_ACTIVE = frozenset({"INVALID_STATE"})


@dataclass
class DatabricksRunMeta(ResourceMeta):
    """Identifies a run: its id, its workspace and the *name* of the credential to reach it (never a secret).

    Args:
        run_id: the run's id in the workspace.
        instance: the workspace's base URL.
        auth_type: ``"pat"`` or ``"oauth_m2m"``.
        secret: the name of the secret holding the PAT or the OAuth client secret.
        client_id: the OAuth service principal's id, for ``oauth_m2m``.
    """

    run_id: int
    instance: str
    auth_type: str = "pat"
    secret: str = DEFAULT_TOKEN_SECRET
    client_id: str | None = None


def run_phase(state: dict[str, Any]) -> tuple[TaskExecution.Phase.ValueType, str]:
    """The Flyte phase of a run's ``state`` object, and the state's name, never raising.

    A TERMINATED run's phase is its result state's. An unknown life-cycle state is
    reported as RUNNING (the task's timeout still bounds it); an unknown or missing
    result state of a terminated run as FAILED.
    """
    life = str(state.get("life_cycle_state") or "")
    result = state.get("result_state")
    if life == "TERMINATED":
        name = str(result or "")
        try:
            return to_phase(name), name
        except ValueError:
            return TaskExecution.FAILED, name or "TERMINATED without a result state"
    try:
        return to_phase(life), life
    except ValueError:
        return TaskExecution.RUNNING, life or "unknown"


class DatabricksAgent(AsyncAgentBase):
    """Runs ``databricks`` tasks (flyteagents' Databricks config or flytekitplugins-spark's DatabricksV2).

    A Python task runs on a new cluster started from the task's container image (or an
    existing cluster, or serverless compute) as a ``spark_python_task`` executing flytekit's
    entrypoint with the task's container args: it reads ``inputs.pb`` and writes
    ``outputs.pb`` under the output prefix. A notebook task runs its notebook with base
    parameters.

    Args:
        settings: workspace, default credential and timeouts; from the environment if None.
        task_type_name: the task type served.
    """

    name = "Databricks Agent"

    def __init__(self, settings: DatabricksSettings | None = None, task_type_name: str = "databricks") -> None:
        super().__init__(task_type_name=task_type_name, metadata_type=DatabricksRunMeta)
        self.settings = settings or DatabricksSettings.from_env()
        self.pool = JobsClientPool(
            request_timeout=self.settings.request_timeout,
            call_timeout=self.settings.call_timeout,
            max_connections=self.settings.max_connections,
        )
        self._oauth = OAuthTokenCache()

    async def _client(self, base_url: str, creds: Credentials) -> JobsClient:
        """The pooled client for the workspace, with the credential resolved now (secrets can rotate)."""
        if creds.auth_type == "oauth_m2m":
            if not creds.client_id:
                raise InvalidTaskError("OAuth M2M needs a client id")
            client_secret = resolve_secret(creds.secret)
            anonymous = await self.pool.client(base_url, None)
            token = await self._oauth.token(
                anonymous.session, base_url, creds.client_id, client_secret, self.settings.request_timeout
            )
        else:
            token = resolve_secret(creds.secret)
        return await self.pool.client(base_url, token)

    async def _call(
        self, base_url: str, creds: Credentials, op: Callable[[JobsClient], Awaitable[_T]]
    ) -> tuple[_T, JobsClient]:
        """Run ``op`` with the pooled client; an OAuth token the workspace refuses (401/403) is fetched anew once."""
        client = await self._client(base_url, creds)
        try:
            return await op(client), client
        except DatabricksAPIError as exc:
            if exc.status not in (401, 403) or creds.auth_type != "oauth_m2m" or creds.client_id is None:
                raise
        self._oauth.invalidate(base_url, creds.client_id, resolve_secret(creds.secret))
        client = await self._client(base_url, creds)
        return await op(client), client

    async def create(  # type: ignore[override]
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        task_execution_metadata: TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> DatabricksRunMeta:
        """Submit the run, or find the one this task attempt already submitted."""
        base_url, creds = self.settings.for_task(task_template.custom or {})
        name = task_template.id.name if task_template.id else ""
        token = idempotency_token(task_execution_metadata, name)
        request = build_submit_request(
            task_template, output_prefix, token, inputs=inputs, default_git_source=self.settings.git_source
        )
        try:
            run_id, _ = await self._call(base_url, creds, lambda c: c.submit(request))
        except DatabricksAPIError as exc:
            if exc.status == 400:
                raise InvalidTaskError(f"Databricks rejected the run: {exc}") from None
            raise
        logger.info("submitted Databricks run %s on %s", run_id, base_url)
        return DatabricksRunMeta(
            run_id=run_id,
            instance=base_url,
            auth_type=creds.auth_type,
            secret=creds.secret,
            client_id=creds.client_id,
        )

    async def get(self, resource_meta: DatabricksRunMeta, **kwargs: Any) -> Resource:  # type: ignore[override]
        """The run's phase, its state message, and a link to its run page."""
        meta = resource_meta
        try:
            run, client = await self._call(
                normalize_instance(meta.instance), _credentials(meta), lambda c: c.get_run(meta.run_id)
            )
        except DatabricksAPIError as exc:
            if exc.status in (400, 404) and exc.error_code in _NO_SUCH_RUN:
                return Resource(phase=TaskExecution.FAILED, message=f"Databricks run {meta.run_id}: {exc}")
            raise
        raw_state = run.get("state")
        state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
        phase, state_name = run_phase(state)
        message = str(state.get("state_message") or "")
        if is_terminal_phase(phase) and phase != TaskExecution.SUCCEEDED:
            detail = await self._task_error(client, run) if phase == TaskExecution.FAILED else None
            message = f"Databricks run {meta.run_id} ended {state_name}" + "".join(
                f": {part}" for part in (message, detail) if part
            )
        url = run.get("run_page_url") or f"{meta.instance}/#job/{run.get('job_id', meta.run_id)}/run/{meta.run_id}"
        info = {
            "run_id": meta.run_id,
            "life_cycle_state": state.get("life_cycle_state"),
            "result_state": state.get("result_state"),
            "run_page_url": url,
        }
        return Resource(
            phase=phase,
            message=message or state_name,
            log_links=[TaskLog(uri=str(url), name="Databricks Console")],
            custom_info=info,
        )

    async def _task_error(self, client: JobsClient, run: dict[str, Any]) -> str | None:
        """The error of the run's first failed task, as runs/get-output reports it; best effort."""
        for task in run.get("tasks") or []:
            state = task.get("state") or {}
            if state.get("result_state") not in (None, "SUCCESS") and isinstance(task.get("run_id"), int):
                try:
                    output = await client.get_output(task["run_id"])
                except DatabricksAPIError as exc:
                    logger.warning("could not read the output of Databricks task run %s: %s", task["run_id"], exc)
                    return None
                error = output.get("error")
                return str(error) if error else None
        return None

    async def delete(self, resource_meta: DatabricksRunMeta, **kwargs: Any) -> None:  # type: ignore[override]
        """Cancel the run; a run that is gone or finished is left alone."""
        meta = resource_meta
        try:
            await self._call(normalize_instance(meta.instance), _credentials(meta), lambda c: c.cancel_run(meta.run_id))
        except DatabricksAPIError as exc:
            if exc.status in (400, 404) and exc.error_code in _NO_SUCH_RUN:
                logger.info("Databricks run %s on %s is unknown there: nothing to cancel", meta.run_id, meta.instance)
                return
            if exc.status in (400, 409) and exc.error_code in _NOT_ACTIVE:
                logger.info("Databricks run %s on %s had already finished", meta.run_id, meta.instance)
                return
            raise
        # A warning, so a local run interrupted with Ctrl-C says which run it cancelled.
        logger.warning("cancelled Databricks run %s on %s", meta.run_id, meta.instance)

    async def aclose(self) -> None:
        """Close the running loop's pooled HTTP clients."""
        await self.pool.aclose()


def _credentials(meta: DatabricksRunMeta) -> Credentials:
    if meta.auth_type not in ("pat", "oauth_m2m"):
        raise InvalidTaskError(f"resource_meta names an unknown Databricks auth type {meta.auth_type!r}")
    return Credentials(meta.auth_type, meta.secret, meta.client_id)
