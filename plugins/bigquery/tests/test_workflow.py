"""BigQueryTask in a local workflow: typed parameters in, a DataFrame out to the next task."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pyarrow as pa
import pytest
from flyteagents_bigquery import BigQueryConfig, BigQueryTask, BigQueryToPandasDecoder, parse_bq_uri
from flytekit import kwtypes, task, workflow
from flytekit.types.structured import StructuredDataset
from flytekit.types.structured.structured_dataset import StructuredDatasetTransformerEngine

from flyteagents import TaskFailedError

PROJECT = "test-project"

trips_by_city = BigQueryTask(
    name="trips_by_city",
    query_template="""
        SELECT city, count(*) AS trips, sum(miles) AS miles
        FROM demo.trips
        WHERE miles >= @min_miles AND city IN UNNEST(@cities)
        GROUP BY city ORDER BY city
    """,
    task_config=BigQueryConfig(project=PROJECT, location="US"),
    inputs=kwtypes(min_miles=float, cities=list[str]),
    output_structured_dataset_type=pd.DataFrame,
)


@task
def busiest(df: pd.DataFrame) -> str:
    return str(df.sort_values(["trips", "city"], ascending=[False, True]).iloc[0]["city"])


@task
def total_miles(df: pd.DataFrame) -> float:
    return float(df["miles"].sum())


@workflow
def city_report(min_miles: float, cities: list[str]) -> tuple[str, float]:
    rows = trips_by_city(min_miles=min_miles, cities=cities)
    return busiest(df=rows), total_miles(df=rows)


def test_workflow_runs_the_query_and_the_next_task_reads_the_rows(emulator):
    inserts = emulator.count("POST", "/jobs")
    top, miles = city_report(min_miles=6.0, cities=["city0", "city2"])
    ids = [i for i in range(20) if i * 1.5 >= 6.0 and i % 3 in (0, 2)]
    counts = {c: sum(1 for i in ids if i % 3 == c) for c in (0, 2)}
    assert top == f"city{max(counts, key=lambda c: (counts[c], -c))}"
    assert miles == pytest.approx(sum(i * 1.5 for i in ids))
    assert emulator.count("POST", "/jobs") - inserts == 1  # one job, read by both tasks
    assert emulator.count("GET", "/data") >= 2  # both tasks paged through tabledata.list


every_type = BigQueryTask(
    name="every_type",
    query_template=(
        "SELECT @i AS i, @f AS f, @s AS s, @b AS b, @ts AS ts, @d AS d, @raw AS raw,"
        " @ints AS ints, @floats AS floats, @strs AS strs, @bools AS bools, @tss AS tss, @ds AS ds"
    ),
    task_config=BigQueryConfig(project=PROJECT),
    inputs=kwtypes(
        i=int,
        f=float,
        s=str,
        b=bool,
        ts=dt.datetime,
        d=dt.date,
        raw=bytes,
        ints=list[int],
        floats=list[float],
        strs=list[str],
        bools=list[bool],
        tss=list[dt.datetime],
        ds=list[dt.date],
    ),
    output_structured_dataset_type=pd.DataFrame,
)


@task
def as_json(df: pd.DataFrame) -> str:
    row = df.iloc[0]

    def plain(v):
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, (dt.datetime, dt.date, pd.Timestamp)):
            return v.isoformat()
        if isinstance(v, bytes):
            return v.hex()
        return v

    return json.dumps({k: plain(row[k]) for k in df.columns})


@workflow
def echo(
    i: int,
    f: float,
    s: str,
    b: bool,
    ts: dt.datetime,
    d: dt.date,
    raw: bytes,
    ints: list[int],
    floats: list[float],
    strs: list[str],
    bools: list[bool],
    tss: list[dt.datetime],
    ds: list[dt.date],
) -> str:
    return as_json(
        df=every_type(
            i=i,
            f=f,
            s=s,
            b=b,
            ts=ts,
            d=d,
            raw=raw,
            ints=ints,
            floats=floats,
            strs=strs,
            bools=bools,
            tss=tss,
            ds=ds,
        )
    )


def test_parameters_of_every_type_round_trip(emulator):
    ts = dt.datetime(2024, 2, 29, 13, 14, 15, 123456)
    values = dict(
        i=-42,
        f=2.5,
        s='it\'s "quoted"',
        b=True,
        ts=ts,
        d=dt.date(2023, 12, 31),
        raw=b"\x00\xffbytes",
        ints=[1, 2, 3],
        floats=[0.5, -1.25],
        strs=["a", "b"],
        bools=[True, False],
        tss=[ts, ts + dt.timedelta(days=1)],
        ds=[dt.date(2020, 1, 1)],
    )
    out = json.loads(echo(**values))
    assert out == {
        "i": -42,
        "f": 2.5,
        "s": 'it\'s "quoted"',
        "b": True,
        "ts": ts.isoformat(),
        "d": "2023-12-31",
        "raw": b"\x00\xffbytes".hex(),
        "ints": [1, 2, 3],
        "floats": [0.5, -1.25],
        "strs": ["a", "b"],
        "bools": [True, False],
        "tss": [ts.isoformat(), (ts + dt.timedelta(days=1)).isoformat()],
        "ds": out["ds"],
    }
    # pandas reads a REPEATED DATE as datetime64 values: compare the dates
    assert [dt.datetime.fromisoformat(v).date() for v in out["ds"]] == values["ds"]
    job = max(emulator.jobs.values(), key=lambda j: j.created_ms)
    types = {p["name"]: p["parameterType"] for p in job.configuration["query"]["queryParameters"]}
    assert types["i"] == {"type": "INT64"} and types["f"] == {"type": "FLOAT64"}
    assert types["b"] == {"type": "BOOL"} and types["raw"] == {"type": "BYTES"}
    assert types["ts"] == {"type": "DATETIME"} and types["d"] == {"type": "DATE"}
    assert types["ds"] == {"type": "ARRAY", "arrayType": {"type": "DATE"}}
    assert types["tss"] == {"type": "ARRAY", "arrayType": {"type": "DATETIME"}}


bad_sql = BigQueryTask(
    name="bad_sql",
    query_template="SELECT nonsense FROM demo.trips",
    task_config=BigQueryConfig(project=PROJECT),
    output_structured_dataset_type=pd.DataFrame,
)


def test_a_failing_query_fails_the_local_task_with_bigquerys_message(emulator):
    with pytest.raises(TaskFailedError, match="nonsense") as info:
        bad_sql()
    assert info.value.phase == "FAILED"


def test_decoder_reads_selected_columns_as_pandas_and_arrow_over_rest(emulator):
    from flytekit import FlyteContextManager
    from flytekit.models import literals
    from flytekit.models.types import StructuredDatasetType

    decoder = StructuredDatasetTransformerEngine.get_decoder(pd.DataFrame, "bq", "")
    assert isinstance(decoder, BigQueryToPandasDecoder)  # ours, not flytekit's gRPC-only one
    ctx = FlyteContextManager.current_context()
    lit = literals.Literal(
        scalar=literals.Scalar(
            structured_dataset=literals.StructuredDataset(
                uri=f"bq://{PROJECT}:demo.trips",
                metadata=literals.StructuredDatasetMetadata(StructuredDatasetType(format="")),
            )
        )
    )
    from typing import Annotated

    narrow = Annotated[pd.DataFrame, kwtypes(id=int, city=str)]
    pages = emulator.count("GET", "/demo/tables/trips/data")
    df = StructuredDatasetTransformerEngine().to_python_value(ctx, lit, narrow)
    assert list(df.columns) == ["id", "city"] and len(df) == 20
    assert emulator.count("GET", "/demo/tables/trips/data") > pages
    table = StructuredDatasetTransformerEngine().to_python_value(ctx, lit, pa.Table)
    assert table.num_rows == 20 and set(table.column_names) == {"id", "city", "miles"}
    sd = StructuredDatasetTransformerEngine().to_python_value(ctx, lit, StructuredDataset)
    assert sd.open(pd.DataFrame).all()["miles"].sum() == pytest.approx(sum(i * 1.5 for i in range(20)))


def test_bq_uri_forms():
    ref = parse_bq_uri("bq://proj-1:ds.tbl")
    assert (ref.project, ref.dataset_id, ref.table_id) == ("proj-1", "ds", "tbl")
    assert parse_bq_uri("bq://proj.ds.tbl").table_id == "tbl"
    with pytest.raises(ValueError, match=r"bq://project:dataset\.table"):
        parse_bq_uri("s3://bucket/key")


def test_a_local_run_past_its_timeout_cancels_the_bigquery_job(emulator, tmp_path, monkeypatch):
    from datetime import timedelta

    from bq_emulator import BigQueryEmulator
    from flytekit.core.base_task import TaskMetadata

    from flyteagents import AgentTimeoutError

    with BigQueryEmulator(pending_polls=1, running_polls=10**6) as slow:
        key = tmp_path / "key.json"
        key.write_text(json.dumps(slow.service_account_info(PROJECT)))
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", slow.url)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        never_done = BigQueryTask(
            name="never_done",
            query_template="SELECT 1 AS one",
            task_config=BigQueryConfig(project=PROJECT),
            output_structured_dataset_type=pd.DataFrame,
            metadata=TaskMetadata(timeout=timedelta(seconds=1)),
        )
        with pytest.raises(AgentTimeoutError, match="timed out"):
            never_done()
        (job,) = slow.jobs.values()
        assert slow.count("POST", f"/jobs/{job.job_id}/cancel") == 1
        assert job.cancel_requested
