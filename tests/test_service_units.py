"""The service's pure parts: the error table, lazy models, remembered decodings, output conversion."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import interface_pb2, literals_pb2, tasks_pb2, types_pb2
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from flyteagents import (
    AgentError,
    AgentNotFoundError,
    AgentTimeoutError,
    ExternalServiceError,
    InvalidResourceMetaError,
    InvalidTaskError,
    ResourceMeta,
    UnsupportedOperationError,
)
from flyteagents._literals import literal_map_model, primitive_literal_map
from flyteagents._runner import AgentRunner
from flyteagents.server import status_for
from flyteagents.server._inputs import check_inputs
from flyteagents.server._lazy import task_arguments, unconverted_proto
from flyteagents.server._metrics import ServiceMetrics
from flyteagents.server._outputs import outputs_to_proto, python_type_of
from flyteagents.server._resource_meta import decode_meta

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (AgentNotFoundError("x"), grpc.StatusCode.NOT_FOUND),
        (InvalidTaskError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidResourceMetaError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnsupportedOperationError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (AgentTimeoutError("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (asyncio.TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ExternalServiceError("x"), grpc.StatusCode.UNAVAILABLE),
        (ExternalServiceError("x", retryable=False), grpc.StatusCode.FAILED_PRECONDITION),
        (AgentError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (KeyError("password=hunter2"), grpc.StatusCode.INTERNAL),
    ],
)
def test_error_table(exc, code):
    got, details = status_for(exc)
    assert got == code
    if code == grpc.StatusCode.INTERNAL:
        assert "hunter2" not in details and "KeyError" in details


def test_lazy_template_converts_once_on_first_read():
    pb = sa.template(sa.JOB_TYPE, ("a",), {"sleep": 1.5})
    template = task_arguments(pb, "s3://b/out", None, None)["task_template"]
    assert isinstance(template, TaskTemplate)
    assert unconverted_proto(template) is pb
    assert template.custom == {"sleep": 1.5}
    assert template.type == sa.JOB_TYPE
    assert unconverted_proto(template) is None  # converted now
    assert template.to_flyte_idl() == TaskTemplate.from_flyte_idl(pb).to_flyte_idl()
    assert list(template.interface.inputs) == ["a"]


def test_lazy_model_that_cannot_convert_is_an_invalid_task():
    bad = tasks_pb2.TaskTemplate(
        type="x",
        interface=interface_pb2.TypedInterface(
            inputs=interface_pb2.VariableMap(
                variables={"a": interface_pb2.Variable(type=types_pb2.LiteralType(simple=99))}  # no such type
            )
        ),
    )
    template = task_arguments(bad, "s3://b/out", None, None)["task_template"]
    try:
        _ = template.interface.inputs["a"].type.simple
    except InvalidTaskError:
        pass  # flytekit refused it: reported as the client's error, not an internal one


def test_lazy_literal_map_passes_its_proto_back_unread():
    pb = sa.string_inputs(text="hi")
    inputs = task_arguments(tasks_pb2.TaskTemplate(), "s3://b/out", pb, None)["inputs"]
    assert isinstance(inputs, LiteralMap)
    assert unconverted_proto(inputs) is pb
    assert inputs.literals["text"].scalar.primitive.string_value == "hi"
    assert inputs.to_flyte_idl() == pb


def test_task_arguments_are_lazy_models_and_none_for_what_was_not_sent():
    template_pb = sa.template(sa.JOB_TYPE, ("a",), {})
    meta_pb = agent_pb2.TaskExecutionMetadata(namespace="flytesnacks-development", labels={"team": "data"})
    args = task_arguments(template_pb, "s3://b/out", None, meta_pb)
    assert set(args) == {"task_template", "output_prefix", "inputs", "task_execution_metadata"}
    assert args["output_prefix"] == "s3://b/out"
    assert args["inputs"] is None
    meta = args["task_execution_metadata"]
    assert isinstance(meta, TaskExecutionMetadata)
    assert meta.namespace == "flytesnacks-development" and meta.labels == {"team": "data"}
    assert task_arguments(template_pb, "s3://b/out", None, None)["task_execution_metadata"] is None


def test_decode_meta_wraps_errors_of_custom_decoders():
    class Custom(ResourceMeta):
        @classmethod
        def decode(cls, data: bytes) -> Custom:
            raise RuntimeError("bad bytes")

    with pytest.raises(InvalidResourceMetaError, match="bad bytes"):
        decode_meta(Custom, b"x")


def test_python_type_of_looks_inside_collections():
    assert python_type_of([1, 2]) == list[int]
    assert python_type_of({"a": [1.5]}) == dict[str, list[float]]
    assert python_type_of([1, 2.5]) == list[float]
    assert python_type_of([]) == list[str]


async def test_outputs_follow_the_declared_interface_for_collections():
    # [None] alone says nothing of list[Optional[int]]: only the interface gives the union its type
    optional_ints = TypeEngine.to_literal_type(list[int | None]).to_flyte_idl()
    interface = {"xs": interface_pb2.Variable(type=optional_ints)}
    pb = await outputs_to_proto({"xs": [None], "n": 3}, interface)
    (item,) = pb.literals["xs"].collection.literals
    assert item.scalar.HasField("union")
    assert pb.literals["n"].scalar.primitive.integer == 3
    inferred = await outputs_to_proto({"xs": [None]})
    assert not inferred.literals["xs"].collection.literals[0].scalar.HasField("union")
    # a value the declared type refuses (ints for floats) still converts, by its own type
    floats = types_pb2.LiteralType(collection_type=types_pb2.LiteralType(simple=types_pb2.FLOAT))
    pb = await outputs_to_proto({"xs": [1, 2]}, {"xs": interface_pb2.Variable(type=floats)})
    assert [lit.scalar.primitive.integer for lit in pb.literals["xs"].collection.literals] == [1, 2]


@pytest.mark.parametrize(
    ("values", "declared"),
    [
        ({"o0": "pong", "n": 3, "x": 2.5, "ok": True, "no": False, "empty": ""}, None),
        ({"big": 2**63 - 1, "neg": -(2**63), "zero": 0, "nan": float("inf")}, None),
        ({"f": 3.0, "g": 1.5, "s": "a", "b": True, "i": 7}, {"f": float, "g": float, "s": str, "b": bool, "i": int}),
    ],
)
async def test_primitive_outputs_are_the_literals_the_type_engine_builds(values, declared):
    fast = primitive_literal_map(values, declared)
    assert fast is not None
    types = declared or {name: type(value) for name, value in values.items()}
    ctx = FlyteContextManager.current_context()
    assert fast == await TypeEngine.dict_to_literal_map_pb(ctx, values, types)
    assert await outputs_to_proto(values) == await TypeEngine.dict_to_literal_map_pb(
        ctx, values, {name: type(value) for name, value in values.items()}
    )


@pytest.mark.parametrize(
    ("values", "declared"),
    [
        ({"o0": None}, None),
        ({"xs": ["a"]}, None),
        ({"big": 2**63}, None),
        ({"flag": True}, {"flag": int}),  # bool is an int to Python, not to flytekit's int transformer
        ({"n": 1.5}, {"n": int}),
        ({"x": 3}, {"x": float}),  # flytekit's float transformer refuses ints
        ({"s": "a"}, {}),  # an output the interface does not declare
        ({"d": 1}, {"d": Path}),
    ],
)
def test_other_outputs_are_left_to_the_type_engine(values, declared):
    assert primitive_literal_map(values, declared) is None


def test_literal_map_model_reads_like_a_model_and_hands_back_its_proto_unread():
    pb = primitive_literal_map({"n": 2, "s": "x"})
    assert pb is not None
    unread = literal_map_model(pb)
    assert isinstance(unread, LiteralMap)
    assert unread.to_flyte_idl() is pb
    read = literal_map_model(pb)
    assert read.literals["n"].scalar.primitive.integer == 2
    assert read.to_flyte_idl() == pb
    ctx = FlyteContextManager.current_context()
    assert TypeEngine.literal_map_to_kwargs(ctx, literal_map_model(pb), {"n": int, "s": str}) == {"n": 2, "s": "x"}


def test_settled_type_engine_stops_importing_on_every_lookup(tmp_path: Path):
    # In a fresh interpreter: settling is process-wide. pandas with its StructuredDataset handlers
    # registered first is the state in which flytekit retries an import on every lookup.
    script = tmp_path / "lookups.py"
    script.write_text(
        """
import sys
import pandas
from flytekit.core.type_engine import TypeEngine
from flytekit.types.structured import lazy_import_structured_dataset_handler
from flyteagents.server._outputs import settle_type_engine

lazy_import_structured_dataset_handler()
tried = []

class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name == "flytekit.types.schema.types_pandas":
            tried.append(name)
        return None

sys.meta_path.insert(0, Recorder())
for _ in range(5):
    TypeEngine.to_literal_type(str)
before = len(tried)
settle_type_engine()
settle_type_engine()
del tried[:]
for _ in range(5):
    assert TypeEngine.to_literal_type(str).simple == 3
after = len(tried)
import numpy  # a newly imported module the engine looks at: registration runs once more
TypeEngine.to_literal_type(int)
TypeEngine.to_literal_type(int)
print(before, after, len(tried))
"""
    )
    import subprocess

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    before, after, later = map(int, out.stdout.split())
    assert before >= 5  # flytekit alone: one import attempt per lookup
    assert after == 0
    assert later <= 1


def test_metrics_lose_no_call_while_a_scrape_folds_concurrently():
    metrics = ServiceMetrics(AgentRunner(1))
    calls = 20_000
    done = threading.Event()
    scrapes = 0

    def scrape_until_done() -> None:
        nonlocal scrapes
        while not done.is_set():
            metrics.registry.get_sample_value(
                "flyteagents_requests_total", {"task_type": "t", "operation": "get", "code": "OK"}
            )
            scrapes += 1

    scraper = threading.Thread(target=scrape_until_done)
    scraper.start()
    try:
        for i in range(calls):
            metrics.observe("t", "get", "OK", 0.002 if i % 2 else 20.0)
            if i % 1000 == 0:
                time.sleep(0.0005)  # let the scraper run between folds, not only before or after them
    finally:
        done.set()
        scraper.join()
    registry = metrics.registry
    assert scrapes > 1
    assert (
        registry.get_sample_value("flyteagents_requests_total", {"task_type": "t", "operation": "get", "code": "OK"})
        == calls
    )
    labels = {"task_type": "t", "operation": "get"}
    assert (
        registry.get_sample_value("flyteagents_request_duration_seconds_bucket", {**labels, "le": "0.0025"})
        == calls // 2
    )
    assert registry.get_sample_value("flyteagents_request_duration_seconds_sum", labels) == pytest.approx(
        calls // 2 * 20.002
    )


def _typed_template(**declared: types_pb2.LiteralType) -> tasks_pb2.TaskTemplate:
    template = tasks_pb2.TaskTemplate(type="t")
    template.interface.SetInParent()
    for name, literal_type in declared.items():
        template.interface.inputs.variables[name].type.CopyFrom(literal_type)
    return template


_INT = types_pb2.LiteralType(simple=types_pb2.INTEGER)
_STR = types_pb2.LiteralType(simple=types_pb2.STRING)
_OPTIONAL_STR = types_pb2.LiteralType(
    union_type=types_pb2.UnionType(variants=[_STR, types_pb2.LiteralType(simple=types_pb2.NONE)])
)


def _given(**values: object) -> literals_pb2.LiteralMap:
    literals = {}
    for name, value in values.items():
        primitive = (
            literals_pb2.Primitive(integer=value) if type(value) is int else literals_pb2.Primitive(string_value=value)
        )
        literals[name] = literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=primitive))
    return literals_pb2.LiteralMap(literals=literals)


@pytest.mark.parametrize(
    ("inputs", "error"),
    [
        (_given(n=1, word="w", note="x"), None),
        (_given(n=1, word="w"), None),  # the optional one left out
        (_given(n=1), "missing word)"),
        (None, "missing n, word)"),
        (_given(n=1, word="w", extra="x"), "(not declared: extra)"),
        (_given(n=1, extra="x"), "(missing word; not declared: extra)"),
        (_given(word="w", note="x", zz=2, aa=1), "(missing n; not declared: aa, zz)"),
        (_given(n="1", word="w"), "input 'n' is a string, but the task declares integer"),
        (_given(n=1, word="w", note=3), "input 'note' is an integer, but the task declares string or none"),
    ],
)
def test_inputs_are_checked_by_name_then_by_kind(inputs: literals_pb2.LiteralMap | None, error: str | None) -> None:
    template = _typed_template(n=_INT, word=_STR, note=_OPTIONAL_STR)
    if error is None:
        check_inputs(template, inputs)
        return
    with pytest.raises(InvalidTaskError) as info:
        check_inputs(template, inputs)
    assert error in str(info.value)


def test_a_template_without_an_interface_takes_any_inputs_and_an_empty_one_none() -> None:
    check_inputs(tasks_pb2.TaskTemplate(type="t"), _given(anything=1))
    with pytest.raises(InvalidTaskError, match=r"not declared: anything\)"):
        check_inputs(_typed_template(), _given(anything=1))
    check_inputs(_typed_template(), None)
