"""BigQueryAgent: runs a task's SQL as a BigQuery query job through create, get and delete."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import google.auth.exceptions
import requests
from flyteidl.core.execution_pb2 import TaskExecution, TaskLog
from flytekit.models import literals
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from flyteagents import (
    AsyncAgentBase,
    ExternalServiceError,
    InvalidTaskError,
    Resource,
    ResourceMeta,
    to_phase,
    untrusted_certificate,
)
from flyteagents.plugin import task_execution_id

from ._client import ClientCache
from ._config import parse_custom
from ._decoder import results_metadata
from ._params import query_parameters

__all__ = ["TASK_TYPE", "BigQueryAgent", "BigQueryJob", "job_id_for"]

TASK_TYPE = "bigquery_query_job_task"
RESULTS = "results"
logger = logging.getLogger("flyteagents.bigquery")

#: Failures of the call itself, to be classified by _is_transient / _service_error.
_CALL_ERRORS = (
    gexc.GoogleAPICallError,
    gexc.RetryError,
    google.auth.exceptions.GoogleAuthError,
    requests.exceptions.RequestException,
    ConnectionError,
    TimeoutError,
)
#: BigQuery answers some rate limits with 403 and one of these reasons.
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "backendError", "internalError"})


def _is_transient(exc: BaseException) -> bool:
    """True for failures worth asking again: rate limits, BigQuery's 5xx, the network."""
    if untrusted_certificate(exc):
        return False  # the same certificate fails the same way every time
    if isinstance(exc, (gexc.TooManyRequests, gexc.ServerError, gexc.RetryError)):
        return True
    if isinstance(exc, gexc.Forbidden):
        return any(e.get("reason") in _RATE_LIMIT_REASONS for e in exc.errors or [] if isinstance(e, dict))
    if isinstance(exc, google.auth.exceptions.RefreshError):
        return bool(getattr(exc, "retryable", False))
    return isinstance(
        exc,
        (
            google.auth.exceptions.TransportError,
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            ConnectionError,
            TimeoutError,
        ),
    )


def _service_error(exc: BaseException, what: str) -> Exception:
    """The flyteagents error for a failed call: retryable or not, or an invalid task."""
    if _is_transient(exc):
        return ExternalServiceError(f"{what}: {_brief(exc)}")
    if untrusted_certificate(exc):
        return ExternalServiceError(
            f"{what}: the endpoint's TLS certificate is not trusted (CERTIFICATE_VERIFY_FAILED): for a private CA "
            "or a TLS-inspecting proxy, set REQUESTS_CA_BUNDLE in the agent's environment to a PEM bundle that "
            "includes it",
            retryable=False,
        )
    if isinstance(exc, gexc.BadRequest):
        return InvalidTaskError(f"{what}: {_brief(exc)}")
    return ExternalServiceError(f"{what}: {_brief(exc)}", retryable=False)


@dataclass
class BigQueryJob(ResourceMeta):
    """Identifies a query job; travels through FlytePropeller as JSON (no secrets)."""

    job_id: str
    project: str
    location: str = ""
    has_results: bool = True
    credentials_secret: str | None = None


def job_id_for(meta: TaskExecutionMetadata | None) -> str:
    """A BigQuery job id unique to one attempt of one task execution, the same every time.

    Built from the execution, node and retry attempt, so a repeated create for the same
    attempt finds the job it started; a random id when there is no execution metadata.
    """
    if meta is None or meta.task_execution_id is None:
        return f"flyte_{uuid.uuid4().hex}"
    attempt = task_execution_id(meta) or ""
    task = meta.task_execution_id.task_id
    digest = hashlib.sha256(f"{attempt}/{task.name}/{task.version}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", attempt.split("/", 2)[2])[:200]  # execution/node/attempt
    return f"flyte_{readable}_{digest}"


def console_link(job: BigQueryJob) -> TaskLog:
    """A link to the job in the BigQuery console."""
    uri = (
        f"https://console.cloud.google.com/bigquery?project={job.project}"
        f"&j=bq:{job.location}:{job.job_id}&page=queryresults"
    )
    return TaskLog(uri=uri, name="BigQuery Console")


class BigQueryAgent(AsyncAgentBase):
    """Runs ``bigquery_query_job_task`` tasks, from BigQueryTask or flytekitplugins-bigquery.

    Its methods are plain functions: the framework runs them on its bounded thread pool,
    never on the event loop. Every BigQuery call carries ``timeout`` seconds.

    Args:
        clients: where clients come from; one cache per agent by default.
        timeout: seconds each BigQuery call may take.
        create_retry_deadline: seconds ``create`` keeps retrying rate limits and 5xx
            (safe: the job id makes a repeated insert find the same job).
    """

    name: ClassVar[str] = "BigQuery Agent"

    def __init__(
        self, clients: ClientCache | None = None, timeout: float = 10.0, create_retry_deadline: float = 10.0
    ) -> None:
        super().__init__(task_type_name=TASK_TYPE, metadata_type=BigQueryJob)
        self.clients = clients or ClientCache()
        self.timeout = timeout
        retryable = bigquery.DEFAULT_RETRY._predicate
        self._create_retry = bigquery.DEFAULT_RETRY.with_deadline(create_retry_deadline).with_predicate(
            lambda exc: retryable(exc) and not untrusted_certificate(exc)
        )

    def create(
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        task_execution_metadata: TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> BigQueryJob:
        """Insert the query job under this attempt's job id, or find the one already inserted."""
        spec = parse_custom(task_template.custom)
        if task_template.sql is None or not task_template.sql.statement.strip():
            raise InvalidTaskError("the BigQuery task template has no SQL statement")
        interface = task_template.interface
        input_types = {n: v.type for n, v in (interface.inputs if interface else {}).items()}
        job_config = spec.job_config
        params = query_parameters(inputs, input_types, spec.parameter_types)
        taken = {p.name for p in job_config.query_parameters} & {p.name for p in params}
        if taken:
            raise InvalidTaskError(f"query parameters {sorted(taken)} are set both by inputs and QueryJobConfig")
        if params:  # no empty queryParameters field: some emulators refuse the field outright
            job_config.query_parameters = [*job_config.query_parameters, *params]
        job_id = job_id_for(task_execution_metadata)
        client = self.clients.get(spec.project, spec.credentials_secret)
        try:
            job = client.query(
                task_template.sql.statement,
                job_config=job_config,
                job_id=job_id,
                location=spec.location,
                project=spec.project,
                retry=self._create_retry,
                timeout=self.timeout,
                job_retry=None,
            )
        except gexc.Conflict:
            logger.info("BigQuery job %s exists already: reattaching to it", job_id)
            try:
                found = client.get_job(
                    job_id, project=spec.project, location=spec.location, retry=self._create_retry, timeout=self.timeout
                )
            except _CALL_ERRORS as exc:
                raise _service_error(exc, f"BigQuery did not return the existing job {job_id}") from None
            if not isinstance(found, bigquery.QueryJob):
                raise InvalidTaskError(
                    f"BigQuery job {job_id} exists and is a {type(found).__name__}, not a query"
                ) from None
            job = found
        except _CALL_ERRORS as exc:
            raise _service_error(exc, f"BigQuery did not accept query job {job_id}") from None
        has_results = bool(interface and interface.outputs and RESULTS in interface.outputs)
        return BigQueryJob(
            job_id=job_id,
            project=spec.project,
            location=job.location or spec.location or "",
            has_results=has_results,
            credentials_secret=spec.credentials_secret,
        )

    def get(self, resource_meta: BigQueryJob, **kwargs: Any) -> Resource:  # type: ignore[override]
        """The job's phase; once DONE, its destination table as the ``results`` output."""
        links = [console_link(resource_meta)]
        client = self.clients.get(resource_meta.project, resource_meta.credentials_secret)
        try:
            job = client.get_job(
                resource_meta.job_id,
                project=resource_meta.project,
                location=resource_meta.location or None,
                retry=None,  # type: ignore[arg-type]  # no retry: the next poll is the retry
                timeout=self.timeout,
            )
        except gexc.NotFound:
            return Resource(
                phase=TaskExecution.FAILED,
                message=f"BigQuery job {resource_meta.job_id} not found in {resource_meta.project}",
                log_links=links,
            )
        except _CALL_ERRORS as exc:
            if not _is_transient(exc):
                raise _service_error(exc, f"BigQuery did not report job {resource_meta.job_id}") from None
            # A rate limit or outage says nothing about the job: keep polling.
            return Resource(
                phase=TaskExecution.RUNNING,
                message=f"BigQuery did not answer ({_brief(exc)}); polling again",
                log_links=links,
            )
        if not isinstance(job, bigquery.QueryJob):
            return Resource(
                phase=TaskExecution.FAILED,
                message=f"BigQuery job {resource_meta.job_id} is a {type(job).__name__}, not a query job",
                log_links=links,
            )
        info = _custom_info(job)
        state = str(job.state)
        error = job.error_result
        if state == "DONE" and error:
            reason = error.get("reason", "")
            text = f"BigQuery job {job.job_id} {'was cancelled' if reason == 'stopped' else 'failed'}: "
            text += f"{error.get('message', '')} (reason: {reason})"
            phase = to_phase("cancelled") if reason == "stopped" else TaskExecution.FAILED
            return Resource(phase=phase, message=text, log_links=links, custom_info=info)
        phase = to_phase(state)
        if state != "DONE":
            return Resource(phase=phase, message=state, log_links=links, custom_info=info)
        outputs = None
        if resource_meta.has_results:
            dst = job.destination
            if dst is None:
                return Resource(
                    phase=TaskExecution.FAILED,
                    message=f"BigQuery job {job.job_id} produced no result table for the task's output",
                    log_links=links,
                    custom_info=info,
                )
            uri = f"bq://{dst.project}:{dst.dataset_id}.{dst.table_id}"
            outputs = _results_literal(uri, resource_meta.credentials_secret)
        return Resource(phase=phase, message=state, log_links=links, outputs=outputs, custom_info=info)

    def delete(self, resource_meta: BigQueryJob, **kwargs: Any) -> None:  # type: ignore[override]
        """Ask BigQuery to cancel the job; a finished or vanished job is left alone."""
        client = self.clients.get(resource_meta.project, resource_meta.credentials_secret)
        try:
            client.cancel_job(
                resource_meta.job_id,
                project=resource_meta.project,
                location=resource_meta.location or None,
                retry=self._create_retry,
                timeout=self.timeout,
            )
        except gexc.NotFound:
            return
        except _CALL_ERRORS as exc:
            raise _service_error(exc, f"BigQuery did not cancel job {resource_meta.job_id}") from None


def _results_literal(uri: str, credentials_secret: str | None) -> LiteralMap:
    sd = literals.StructuredDataset(uri=uri, metadata=results_metadata(credentials_secret))
    return LiteralMap(literals={RESULTS: literals.Literal(scalar=literals.Scalar(structured_dataset=sd))})


def _custom_info(job: bigquery.QueryJob) -> dict[str, Any]:
    info: dict[str, Any] = {"job_id": job.job_id, "location": job.location, "state": job.state}
    for key, attr in (
        ("total_bytes_processed", "total_bytes_processed"),
        ("total_bytes_billed", "total_bytes_billed"),
        ("slot_millis", "slot_millis"),
        ("cache_hit", "cache_hit"),
        ("statement_type", "statement_type"),
    ):
        value = getattr(job, attr, None)
        if value is not None:
            info[key] = value
    return info


def _brief(exc: BaseException) -> str:
    """An error's first line without the request URL the client library appends."""
    if isinstance(exc, gexc.GoogleAPICallError):
        code = getattr(exc, "code", None)
        return f"{code} {exc.message}".strip() if code else str(exc.message)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
