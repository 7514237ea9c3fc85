"""BigQueryTask for Flyte 2 (the ``flyte`` SDK): the same query job, run by the same BigQueryAgent.

Add it to a ``flyte.TaskEnvironment``; a local run (``flyte.with_runcontext(mode="local")``)
runs the job through BigQueryAgent in this process, and remotely ``flyteagents serve``
answers its template over Flyte 2's connector protocol. Importing this module also lets
Flyte 2 tasks read a ``bq://`` result as a pandas DataFrame or an Arrow table.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
from flyteidl.core import literals_pb2 as v1_literals
from flytekit import FlyteContextManager
from flytekit.models import literals

from flyteagents.flyte2 import AgentTask, split_options
from flyteagents.plugin import run_sync

from ._config import BigQueryConfig
from ._decoder import PROTOCOL, BigQueryToArrowDecoder, BigQueryToPandasDecoder
from ._task import BigQueryTask as _FlytekitBigQueryTask

# After flyteagents.flyte2, which names the extra to install when the flyte SDK is missing.
try:
    from flyte.io._dataframe.dataframe import DataFrameDecoder, DataFrameTransformerEngine
except ImportError as exc:  # pragma: no cover - tests/test_flyte2_imports.py checks it in a subprocess
    raise ImportError(
        "flyteagents_bigquery.flyte2 needs the flyte SDK (Flyte 2): pip install 'flyteagents[flyte2]'"
    ) from exc

__all__ = ["BigQueryConfig", "BigQueryTask"]


class BigQueryTask(AgentTask):
    """A Flyte 2 task that runs ``query_template`` as a BigQuery query job.

    The arguments are those of ``flyteagents_bigquery.BigQueryTask`` (inputs become
    ``@name`` query parameters; ``output_structured_dataset_type`` adds the ``results``
    output, the job's destination table), plus flyte task options (``retries``, ...).

    Example:
        ```python
        top = BigQueryTask(
            name="top_trips",
            query_template="SELECT * FROM demo.trips WHERE miles > @min_miles",
            task_config=BigQueryConfig(project="my-project", location="US"),
            inputs={"min_miles": float},
            output_structured_dataset_type=pd.DataFrame,
        )
        env = flyte.TaskEnvironment.from_task("bigquery", top)
        ```
    """

    def __init__(
        self,
        name: str,
        query_template: str,
        task_config: BigQueryConfig,
        inputs: dict[str, type] | None = None,
        output_structured_dataset_type: type | None = None,
        **kwargs: Any,
    ) -> None:
        options, rest = split_options(kwargs)
        task = _FlytekitBigQueryTask(
            name=name,
            query_template=query_template,
            task_config=task_config,
            inputs=inputs,
            output_structured_dataset_type=output_structured_dataset_type,
            **rest,
        )
        super().__init__(task, **options)


# ---- reading bq:// results in Flyte 2 tasks --------------------------------------------------


class _Flyte2Decoder(DataFrameDecoder):  # type: ignore[misc]
    """A Flyte 2 decoder that reads ``bq://`` tables with the flytekit-side decoder's code."""

    def __init__(self, python_type: type, flytekit_decoder: Any) -> None:
        super().__init__(python_type, PROTOCOL, supported_format="")
        self._flytekit_decoder = flytekit_decoder

    async def decode(self, flyte_value: Any, current_task_metadata: Any) -> Any:
        # flyteidl2's StructuredDataset is wire-compatible with flyteidl's: read it as flytekit's model.
        value = literals.StructuredDataset.from_flyte_idl(
            v1_literals.StructuredDataset.FromString(flyte_value.SerializeToString())
        )
        meta = literals.StructuredDatasetMetadata.from_flyte_idl(
            v1_literals.StructuredDatasetMetadata.FromString(current_task_metadata.SerializeToString())
        )
        ctx = FlyteContextManager.current_context()
        # The BigQuery client blocks while it pages through the table: off the event loop.
        return await run_sync(self._flytekit_decoder.decode, ctx, value, meta)


def register_flyte2_decoders() -> None:
    """Let Flyte 2 tasks read ``bq://`` datasets as pandas DataFrames and Arrow tables (idempotent)."""
    for python_type, decoder in ((pd.DataFrame, BigQueryToPandasDecoder()), (pa.Table, BigQueryToArrowDecoder())):
        DataFrameTransformerEngine.register(_Flyte2Decoder(python_type, decoder), override=True)


register_flyte2_decoders()
