"""BigQueryConfig and the task template's custom field, in flytekitplugins-bigquery's format."""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass, field
from typing import Any

from google.cloud import bigquery

from flyteagents import InvalidTaskError

__all__ = ["BigQueryConfig", "JobSpec", "parse_custom", "to_custom"]

#: Keys flytekitplugins-bigquery writes next to the QueryJobConfig's ``query`` section.
_FLYTEKIT_KEYS = ("ProjectID", "Location", "Domain")
#: Our additions live under one key that flytekit's connector ignores.
_EXTENSION_KEY = "flyteagents"
_BIGQUERY_TYPES = frozenset(
    {"INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "STRING", "BOOL", "BYTES", "DATE", "DATETIME", "TIMESTAMP"}
)


@dataclass(init=False)
class BigQueryConfig:
    """Where and how a BigQueryTask's query job runs.

    Accepts flytekitplugins-bigquery's argument names (``ProjectID``, ``Location``,
    ``QueryJobConfig``) as well as snake_case ones.

    Args:
        project: the Google Cloud project the job runs (and is billed) in.
        location: the job's location, such as ``"US"`` or ``"europe-west1"``.
        query_job_config: a ``google.cloud.bigquery.QueryJobConfig`` applied to the job
            (destination, write disposition, maximum bytes billed, labels, ...).
        credentials_secret: the name (``"group/key"``) of a Flyte secret holding a
            service-account JSON key, read by the agent; None uses Application Default
            Credentials. Only the name travels in the task template.
        parameter_types: BigQuery types for inputs, overriding the inferred ones
            (for example ``{"since": "TIMESTAMP"}``; ``datetime`` inputs default to DATETIME).
    """

    project: str
    location: str | None
    query_job_config: bigquery.QueryJobConfig | None
    credentials_secret: str | None
    parameter_types: dict[str, str] = field(default_factory=dict)

    def __init__(
        self,
        project: str | None = None,
        location: str | None = None,
        query_job_config: bigquery.QueryJobConfig | None = None,
        *,
        credentials_secret: str | None = None,
        parameter_types: dict[str, str] | None = None,
        ProjectID: str | None = None,
        Location: str | None = None,
        QueryJobConfig: bigquery.QueryJobConfig | None = None,
    ) -> None:
        chosen = project or ProjectID
        if not chosen:
            raise ValueError("BigQueryConfig needs a project (ProjectID)")
        self.project = chosen
        self.location = location or Location
        self.query_job_config = query_job_config or QueryJobConfig
        self.credentials_secret = credentials_secret
        self.parameter_types = {k: v.upper() for k, v in (parameter_types or {}).items()}
        unknown = {k: v for k, v in self.parameter_types.items() if v not in _BIGQUERY_TYPES}
        if unknown:
            raise ValueError(f"unknown BigQuery parameter types {unknown}; use one of {sorted(_BIGQUERY_TYPES)}")

    # flytekitplugins-bigquery's attribute names, for code written against it.
    @property
    def ProjectID(self) -> str:
        return self.project

    @property
    def Location(self) -> str | None:
        return self.location

    @property
    def QueryJobConfig(self) -> bigquery.QueryJobConfig | None:
        return self.query_job_config


@dataclass
class JobSpec:
    """What a task template asks the agent to run, decoded from its custom field."""

    project: str
    location: str | None
    job_config: bigquery.QueryJobConfig
    credentials_secret: str | None = None
    parameter_types: dict[str, str] = field(default_factory=dict)


def to_custom(config: BigQueryConfig, domain: str | None) -> dict[str, Any]:
    """The template's custom field: flytekitplugins-bigquery's keys plus an extension section.

    flytekit's connector keeps only the ``query`` section of the QueryJobConfig; the
    rest (labels, job timeout, dry run) and our options go under ``"flyteagents"``.
    """
    custom: dict[str, Any] = {"Location": config.location, "ProjectID": config.project, "Domain": domain}
    extension: dict[str, Any] = {}
    if config.query_job_config is not None:
        api = copy.deepcopy(config.query_job_config.to_api_repr())
        custom.update(api.pop("query", {}))
        if api:
            extension["configuration"] = api
    if config.credentials_secret:
        extension["credentialsSecret"] = config.credentials_secret
    if config.parameter_types:
        extension["parameterTypes"] = dict(config.parameter_types)
    if extension:
        custom[_EXTENSION_KEY] = extension
    return custom


def parse_custom(custom: dict[str, Any] | None) -> JobSpec:
    """Decode a template's custom field, ours or flytekitplugins-bigquery's.

    Raises:
        InvalidTaskError: the project is missing or a section has the wrong shape.
    """
    custom = dict(custom or {})
    project = custom.get("ProjectID")
    if not isinstance(project, str) or not project:
        raise InvalidTaskError("the BigQuery task template names no ProjectID in its custom field")
    location = custom.get("Location") or None
    if location is not None and not isinstance(location, str):
        raise InvalidTaskError(f"the BigQuery task's Location must be a string, got {location!r:.40}")
    extension = custom.get(_EXTENSION_KEY)
    extension = {} if extension is None else extension
    if not isinstance(extension, dict):
        raise InvalidTaskError(f"the task template's {_EXTENSION_KEY!r} section must be an object")
    query = {k: v for k, v in custom.items() if k not in (*_FLYTEKIT_KEYS, _EXTENSION_KEY)}
    configuration = extension.get("configuration")
    configuration = {} if configuration is None else configuration
    if not isinstance(configuration, dict):
        raise InvalidTaskError("the task template's job configuration must be an object")
    try:
        job_config = typing.cast(
            bigquery.QueryJobConfig, bigquery.QueryJobConfig.from_api_repr({**configuration, "query": query})
        )
    except Exception as exc:
        raise InvalidTaskError(f"the task template's QueryJobConfig cannot be read: {exc}") from None
    parameter_types = extension.get("parameterTypes") or {}
    secret = extension.get("credentialsSecret")
    if not isinstance(parameter_types, dict) or (secret is not None and not isinstance(secret, str)):
        raise InvalidTaskError("the task template's parameterTypes or credentialsSecret has the wrong type")
    return JobSpec(project, location, job_config, secret, {str(k): str(v) for k, v in parameter_types.items()})
