"""Reading ``bq://project:dataset.table`` structured datasets as pandas DataFrames or Arrow tables."""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

import pandas as pd
import pyarrow as pa
from flytekit import FlyteContext
from flytekit.models import literals
from flytekit.models.types import StructuredDatasetType
from flytekit.types.structured.structured_dataset import (
    StructuredDatasetDecoder,
    StructuredDatasetMetadata,
    StructuredDatasetTransformerEngine,
)
from google.cloud import bigquery

from ._client import API_ENDPOINT_ENV, CREDENTIALS_SECRET_ENV, ClientCache, emulator_host

__all__ = [
    "BigQueryToArrowDecoder",
    "BigQueryToPandasDecoder",
    "parse_bq_uri",
    "register_decoders",
    "results_metadata",
    "secret_of",
]

PROTOCOL = "bq"
#: "1" forces the BigQuery Storage Read API, "0" the REST API (tabledata.list).
STORAGE_API_ENV = "FLYTEAGENTS_BIGQUERY_STORAGE_API"
_URI = re.compile(r"bq://(?P<project>[^:./]+)[:.](?P<dataset>\w+)\.(?P<table>[\w$-]+)")

_clients = ClientCache(max_clients=8)
_registered = False
_register_lock = threading.Lock()


#: Marks a ``bq://`` output whose metadata names the credentials secret that wrote it.
_SECRET_SCHEMA_TYPE = "flyteagents-bigquery-credentials"


def results_metadata(credentials_secret: str | None) -> literals.StructuredDatasetMetadata:
    """The metadata of a query's ``bq://`` output: the *name* of its credentials secret, if any.

    The name travels in ``external_schema_type``/``external_schema_bytes``, which flytekit
    hands to the reading task's decoder unchanged, so the reader uses the same secret.
    """
    if not credentials_secret:
        return literals.StructuredDatasetMetadata(structured_dataset_type=StructuredDatasetType(format=""))
    payload = json.dumps({"credentials_secret": credentials_secret}).encode()
    sdt = StructuredDatasetType(format="", external_schema_type=_SECRET_SCHEMA_TYPE, external_schema_bytes=payload)
    return literals.StructuredDatasetMetadata(structured_dataset_type=sdt)


def secret_of(flyte_value: literals.StructuredDataset) -> str | None:
    """The credentials secret to read a ``bq://`` dataset with; None means Application Default Credentials.

    ``FLYTEAGENTS_BIGQUERY_CREDENTIALS_SECRET`` in the reading process wins; otherwise the
    secret the query task used, as its output's metadata names it.
    """
    forced = os.environ.get(CREDENTIALS_SECRET_ENV)
    if forced:
        return forced
    sdt = flyte_value.metadata.structured_dataset_type if flyte_value.metadata else None
    if sdt is None or sdt.external_schema_type != _SECRET_SCHEMA_TYPE or not sdt.external_schema_bytes:
        return None
    try:
        name = json.loads(sdt.external_schema_bytes).get("credentials_secret")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def parse_bq_uri(uri: str) -> bigquery.TableReference:
    """``bq://project:dataset.table`` (or ``bq://project.dataset.table``) as a TableReference.

    Raises:
        ValueError: the URI is not of that form.
    """
    m = _URI.fullmatch(uri or "")
    if m is None:
        raise ValueError(f"not a BigQuery table URI: {uri!r}; expected bq://project:dataset.table")
    return bigquery.TableReference(bigquery.DatasetReference(m["project"], m["dataset"]), m["table"])


def _use_storage_api() -> bool:
    forced = os.environ.get(STORAGE_API_ENV)
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes")
    if emulator_host() or os.environ.get(API_ENDPOINT_ENV):
        # Emulators speak REST only; the Storage API's own host is not the API root given.
        return False
    try:
        import google.cloud.bigquery_storage  # noqa: F401
    except ImportError:
        return False
    return True


def _rows(flyte_value: literals.StructuredDataset, metadata: StructuredDatasetMetadata) -> Any:
    ref = parse_bq_uri(flyte_value.uri)
    client = _clients.get(ref.project, secret_of(flyte_value))
    table = client.get_table(ref, timeout=30)
    wanted = []
    sdt = metadata.structured_dataset_type if metadata else None
    if sdt is not None and sdt.columns:
        wanted = [c.name for c in sdt.columns]
    fields = None  # every column: no selectedFields, which some emulators do not support
    if wanted:
        by_name = {f.name: f for f in table.schema}
        missing = [c for c in wanted if c not in by_name]
        if missing:
            raise ValueError(f"{flyte_value.uri} has no column(s) {missing}; it has {list(by_name)}")
        fields = [by_name[c] for c in wanted]
    return client.list_rows(table, selected_fields=fields, timeout=60)


class BigQueryToPandasDecoder(StructuredDatasetDecoder):
    """Reads a BigQuery table into a pandas DataFrame.

    Uses the Storage Read API when google-cloud-bigquery-storage is installed and no
    emulator is configured, otherwise pages through the REST API (tabledata.list).
    """

    def __init__(self) -> None:
        super().__init__(pd.DataFrame, PROTOCOL, supported_format="")

    def decode(
        self,
        ctx: FlyteContext,
        flyte_value: literals.StructuredDataset,
        current_task_metadata: StructuredDatasetMetadata,
    ) -> pd.DataFrame:
        # Through Arrow, as the client's own to_dataframe is deprecated in favour of pandas-gbq.
        table = _rows(flyte_value, current_task_metadata).to_arrow(create_bqstorage_client=_use_storage_api())
        return table.to_pandas()


class BigQueryToArrowDecoder(StructuredDatasetDecoder):
    """Reads a BigQuery table into a pyarrow Table (Storage Read API or REST, as above)."""

    def __init__(self) -> None:
        super().__init__(pa.Table, PROTOCOL, supported_format="")

    def decode(
        self,
        ctx: FlyteContext,
        flyte_value: literals.StructuredDataset,
        current_task_metadata: StructuredDatasetMetadata,
    ) -> pa.Table:
        return _rows(flyte_value, current_task_metadata).to_arrow(create_bqstorage_client=_use_storage_api())


def register_decoders() -> None:
    """Serve ``bq://`` datasets with these decoders, replacing flytekit's gRPC-only ones.

    flytekit's own BigQuery decoders need the Storage Read API; these fall back to REST.
    Calling this again does nothing.
    """
    global _registered
    with _register_lock:
        if _registered:
            return
        # flytekit registers its handlers lazily on first use; do it now so ours replace them.
        from flytekit.types.structured import register_bigquery_handlers

        try:
            register_bigquery_handlers()
        except Exception:  # already registered, or its optional packages are missing
            pass
        for decoder in (BigQueryToPandasDecoder(), BigQueryToArrowDecoder()):
            StructuredDatasetTransformerEngine.register(decoder, override=True)
        _registered = True
