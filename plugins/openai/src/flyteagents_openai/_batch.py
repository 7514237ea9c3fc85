"""The OpenAI Batch API async agent (task type ``openai-batch``) and the task that uses it."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import openai
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.interface import Interface
from flytekit.core.type_engine import TypeEngine
from flytekit.models.core.types import BlobType
from flytekit.models.literals import Blob, BlobMetadata, Literal, LiteralMap, Scalar
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate
from flytekit.types.file import JSONLFile

from flyteagents import (
    AsyncAgentBase,
    AsyncAgentExecutorMixin,
    ExternalServiceError,
    InvalidTaskError,
    Resource,
    ResourceMeta,
    to_phase,
)
from flyteagents.plugin import task_execution_id

from ._clients import ClientCache
from ._errors import OpenAIFailure, classify
from ._literals import string_input, task_custom
from ._local import ensure_agent
from ._settings import OpenAISettings

__all__ = ["BatchEndpointAgent", "BatchEndpointTask", "BatchMeta"]

logger = logging.getLogger("flyteagents.openai")

TASK_TYPE = "openai-batch"
#: The batch metadata key that ties a batch to the Flyte task attempt that created it.
EXECUTION_TAG = "flyte_execution"
# OpenAI limits metadata values to 512 characters.
_MAX_TAG = 512
# Batches in these states are not reused by a repeated create for the same attempt.
_DEAD = frozenset({"failed", "expired", "cancelling", "cancelled"})
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_T = TypeVar("_T")


@dataclass
class BatchMeta(ResourceMeta):
    """Identifies a batch: JSON in resource_meta, no secret.

    Attributes:
        batch_id: OpenAI's batch id.
        output_prefix: where the result files are written once the batch completes.
        outputs: the task's output names, so ``get`` builds exactly those.
        organization: the OpenAI organization the batch belongs to.
    """

    batch_id: str
    output_prefix: str
    outputs: list[str] = field(default_factory=list)
    organization: str | None = None


class BatchEndpointAgent(AsyncAgentBase):
    """Runs an ``openai-batch`` task as an OpenAI batch.

    ``create`` uploads the task's JSONL file (or takes an uploaded file's id, as
    flytekitplugins-openai's templates do), then creates the batch, tagged with the task
    attempt so a repeated create finds it instead of starting a second one. ``get``
    maps the batch status to a phase and, once completed, writes the result file(s) under
    the output prefix. ``delete`` cancels the batch; a cancelled batch ends ABORTED.

    Args:
        settings: endpoint, secret, timeout and concurrency; default from the environment.
        io_workers: threads for reading and writing the task's files in storage.
    """

    name: ClassVar[str] = "OpenAI Batch Agent"

    def __init__(self, settings: OpenAISettings | None = None, io_workers: int = 4) -> None:
        super().__init__(task_type_name=TASK_TYPE, metadata_type=BatchMeta)
        self.settings = settings or OpenAISettings.from_env()
        self.clients = ClientCache(self.settings)
        # Storage I/O (fsspec, flytekit's file access) blocks: it gets its own bounded pool.
        self._io = ThreadPoolExecutor(io_workers, thread_name_prefix="flyteagents-openai-io")

    async def create(  # type: ignore[override]  # the framework awaits coroutine methods
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        task_execution_metadata: TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> BatchMeta:
        """Upload the input file if needed and create the batch (or find this attempt's batch)."""
        custom = task_custom(task_template)
        config = dict(custom.get("config") or {})
        config.setdefault("completion_window", "24h")
        config.setdefault("endpoint", "/v1/chat/completions")
        metadata = {str(k): str(v) for k, v in (config.pop("metadata", None) or {}).items()}
        organization = custom.get("openai_organization") or None
        tag = _execution_tag(task_execution_metadata)
        if tag:
            metadata[EXECUTION_TAG] = tag
        outputs = sorted(task_template.interface.outputs) if task_template.interface else []
        api_key = self._api_key()
        client = await self.clients.client(api_key, organization)
        try:
            async with self.clients.limit():
                batch_id = await self._find(client, tag) if tag else None
                if batch_id is None:
                    file_id = await self._input_file(client, inputs)
                    batch = await client.batches.create(**config, input_file_id=file_id, metadata=metadata)
                    batch_id = batch.id
                    logger.info("created OpenAI batch %s for %s", batch_id, tag or task_template.id.name)
        except openai.OpenAIError as exc:
            raise _agent_error(classify(exc, api_key)) from None
        return BatchMeta(batch_id=batch_id, output_prefix=output_prefix, outputs=outputs, organization=organization)

    async def get(self, resource_meta: BatchMeta, **kwargs: Any) -> Resource:  # type: ignore[override]
        """The batch's phase; once it completed, its outputs."""
        api_key = self._api_key()
        client = await self.clients.client(api_key, resource_meta.organization)
        try:
            async with self.clients.limit():
                batch = await client.batches.retrieve(resource_meta.batch_id)
                status = batch.status
                info: dict[str, Any] = {"batch_id": batch.id, "status": status}
                if batch.request_counts is not None:
                    info["request_counts"] = batch.request_counts.to_dict()
                try:
                    phase = to_phase(status)
                except ValueError:
                    # A status newer than this plugin: keep polling rather than fail a live batch.
                    return Resource(phase=TaskExecution.RUNNING, message=f"batch status {status}", custom_info=info)
                if phase == TaskExecution.SUCCEEDED:
                    return await self._completed(client, resource_meta, batch, info)
        except openai.OpenAIError as exc:
            raise _agent_error(classify(exc, api_key)) from None
        if phase == TaskExecution.FAILED:
            return Resource(phase=phase, message=_failure_message(batch), custom_info=info)
        if phase == TaskExecution.ABORTED:
            return Resource(phase=phase, message=f"batch {batch.id} was cancelled", custom_info=info)
        return Resource(phase=phase, message=f"batch {batch.id} is {status}", custom_info=info)

    async def delete(self, resource_meta: BatchMeta, **kwargs: Any) -> None:  # type: ignore[override]
        """Cancel the batch; a batch that already ended or is gone is left alone."""
        api_key = self._api_key()
        client = await self.clients.client(api_key, resource_meta.organization)
        try:
            async with self.clients.limit():
                try:
                    await client.batches.cancel(resource_meta.batch_id)
                except openai.BadRequestError:
                    # Some servers refuse to cancel a finished batch with a 400: that is not a failure.
                    batch = await client.batches.retrieve(resource_meta.batch_id)
                    if batch.status not in _ENDED:
                        raise
                    return
        except (openai.NotFoundError, openai.ConflictError):
            return
        except openai.OpenAIError as exc:
            raise _agent_error(classify(exc, api_key)) from None
        logger.info("cancelled OpenAI batch %s", resource_meta.batch_id)

    async def aclose(self) -> None:
        """Close the clients opened on the running event loop and the storage threads."""
        await self.clients.aclose()
        self._io.shutdown(wait=False)

    # -- helpers ---------------------------------------------------------------------------

    def _api_key(self) -> str:
        api_key = self.settings.api_key()
        if not api_key:
            raise ExternalServiceError(
                f"no OpenAI API key: the secret {self.settings.secret_name} is not set", retryable=False
            )
        return api_key

    async def _blocking(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._io, functools.partial(fn, *args))

    async def _find(self, client: openai.AsyncOpenAI, tag: str) -> str | None:
        """The live batch an earlier create made for this task attempt, if any."""
        page = await client.batches.list(limit=100)
        for batch in page.data:
            if (batch.metadata or {}).get(EXECUTION_TAG) == tag and batch.status not in _DEAD:
                return batch.id
        return None

    async def _input_file(self, client: openai.AsyncOpenAI, inputs: LiteralMap | None) -> str:
        literals = inputs.literals if inputs is not None else {}
        if "input_file_id" in literals:
            return string_input(inputs, "input_file_id")
        literal = literals.get("jsonl_in")
        blob = literal.scalar.blob if literal is not None and literal.scalar is not None else None
        if blob is None:
            raise InvalidTaskError("an openai-batch task needs a 'jsonl_in' file or an 'input_file_id' input")
        local = await self._blocking(_fetch, blob.uri)
        uploaded = await client.files.create(file=Path(local), purpose="batch")
        return uploaded.id

    async def _completed(
        self, client: openai.AsyncOpenAI, meta: BatchMeta, batch: Any, info: dict[str, Any]
    ) -> Resource:
        counts = batch.request_counts
        failed = counts.failed if counts is not None else 0
        literals: dict[str, Literal] = {}
        for name in meta.outputs:
            if name == "result":
                literals[name] = await self._blocking(_dict_literal, batch.to_dict())
            elif name in ("output_file", "error_file"):
                file_id = batch.output_file_id if name == "output_file" else batch.error_file_id
                if file_id is None and name == "output_file":
                    return Resource(
                        phase=TaskExecution.FAILED,
                        message=f"batch {batch.id} completed but none of its requests succeeded "
                        f"({failed} failed; error file {batch.error_file_id})",
                        custom_info=info,
                    )
                if file_id is not None:
                    literals[name] = await self._save(client, file_id, f"{meta.output_prefix}/{batch.id}/{name}.jsonl")
            else:
                raise InvalidTaskError(f"openai-batch tasks cannot output {name!r}")
        message = f"batch {batch.id} completed" + (f"; {failed} request(s) failed" if failed else "")
        return Resource(phase=TaskExecution.SUCCEEDED, message=message, outputs=LiteralMap(literals), custom_info=info)

    async def _save(self, client: openai.AsyncOpenAI, file_id: str, remote: str) -> Literal:
        """Copy an OpenAI file to ``remote`` (once: a repeated get finds it there) as a JSONL file literal."""
        if not await self._blocking(_exists, remote):
            fd, local = tempfile.mkstemp(suffix=".jsonl", prefix="openai-batch-")
            os.close(fd)
            try:
                async with client.files.with_streaming_response.content(file_id) as response:
                    await response.stream_to_file(local)
                await self._blocking(_store, local, remote)
            finally:
                await self._blocking(_unlink, local)
        return Literal(
            scalar=Scalar(
                blob=Blob(metadata=BlobMetadata(BlobType("jsonl", BlobType.BlobDimensionality.SINGLE)), uri=remote)
            )
        )


def _fetch(uri: str) -> str:
    """A local path holding the file at ``uri`` (downloaded when it is remote)."""
    path = uri.removeprefix("file://")
    if os.path.isfile(path):
        return path
    ctx = FlyteContextManager.current_context()
    local = ctx.file_access.get_random_local_path()
    ctx.file_access.get_data(uri, local)
    return str(local)


def _exists(remote: str) -> bool:
    return bool(FlyteContextManager.current_context().file_access.exists(remote))


def _store(local: str, remote: str) -> None:
    FlyteContextManager.current_context().file_access.put_data(local, remote)


def _unlink(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def _dict_literal(value: dict[str, Any]) -> Literal:
    ctx = FlyteContextManager.current_context()
    return TypeEngine.to_literal(ctx, value, dict, TypeEngine.to_literal_type(dict))


def _execution_tag(meta: TaskExecutionMetadata | None) -> str | None:
    """A stable name for the task attempt: the same on every CreateTask retry, new on a Flyte retry."""
    tag = task_execution_id(meta)
    if tag is not None and len(tag) > _MAX_TAG:
        tag = hashlib.sha256(tag.encode()).hexdigest()
    return tag


def _failure_message(batch: Any) -> str:
    errors = batch.errors.data if batch.errors is not None and batch.errors.data else []
    if errors:
        first = errors[0]
        where = f" (line {first.line})" if getattr(first, "line", None) else ""
        more = f" and {len(errors) - 1} more error(s)" if len(errors) > 1 else ""
        return f"batch {batch.id} {batch.status}: {first.message}{where}{more}"
    if batch.status == "expired":
        return f"batch {batch.id} expired: not finished within its {batch.completion_window} window"
    return f"batch {batch.id} {batch.status}"


def _agent_error(failure: OpenAIFailure) -> Exception:
    """The flyteagents error for a failed OpenAI call: retryable, a bad task, or a permanent failure."""
    if failure.retryable:
        return ExternalServiceError(failure.message, retryable=True)
    if failure.status in (400, 404, 422):
        return InvalidTaskError(failure.message)
    return ExternalServiceError(failure.message, retryable=False)


class BatchEndpointTask(AsyncAgentExecutorMixin, PythonTask):
    """A task that runs a JSONL file of requests as an OpenAI batch.

    Input ``jsonl_in``: the requests, one JSON object per line (``custom_id``, ``method``,
    ``url``, ``body``). Outputs ``output_file``: the batch's results as a JSONL file;
    ``result``: the batch object (ids, status, request counts).

    Example:
        >>> run = BatchEndpointTask(name="embed", config={"endpoint": "/v1/embeddings"})
        >>> @workflow
        ... def wf(requests: JSONLFile) -> JSONLFile:
        ...     return run(jsonl_in=requests).output_file

    Args:
        name: the task's name.
        config: ``batches.create`` parameters (``endpoint`` defaults to
            ``/v1/chat/completions``, ``completion_window`` to ``24h``, ``metadata``).
        openai_organization: the OpenAI organization to bill, if not the key's default.
    """

    _TASK_TYPE = TASK_TYPE

    def __init__(
        self,
        name: str,
        config: dict[str, Any] | None = None,
        openai_organization: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = dict(config or {})
        self.openai_organization = openai_organization
        super().__init__(
            task_type=self._TASK_TYPE,
            name=name,
            task_config=None,
            interface=Interface(inputs={"jsonl_in": JSONLFile}, outputs={"result": dict, "output_file": JSONLFile}),
            **kwargs,
        )

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """The template's custom field, the shape flytekitplugins-openai uses."""
        return {"openai_organization": self.openai_organization, "config": self.config}

    def execute(self, **kwargs: Any) -> Any:
        """Run the batch locally through the Batch agent (registered on first use)."""
        ensure_agent(TASK_TYPE, BatchEndpointAgent)
        return super().execute(**kwargs)
