"""ResourceMeta encodes to JSON and decodes strictly."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from flyteagents import InvalidResourceMetaError, ResourceMeta, TaskCategory
from flyteagents._models import MAX_RESOURCE_META_BYTES


@dataclass
class Cluster:
    name: str
    size: int


@dataclass
class JobMeta(ResourceMeta):
    job_id: str
    attempt: int
    ratio: float = 1.0
    tags: list[str] = field(default_factory=list)
    cluster: Cluster | None = None
    extra: dict[str, int] = field(default_factory=dict)


def test_round_trip_keeps_every_field() -> None:
    meta = JobMeta(job_id="j-1", attempt=2, ratio=0.5, tags=["a"], cluster=Cluster("c", 3), extra={"x": 1})
    data = meta.encode()
    assert data.startswith(b"{") and b"j-1" in data
    assert JobMeta.decode(data) == meta


def test_defaults_fill_missing_optional_fields() -> None:
    assert JobMeta.decode(b'{"job_id":"j","attempt":0}') == JobMeta(job_id="j", attempt=0)


def test_integer_is_accepted_for_float() -> None:
    assert JobMeta.decode(b'{"job_id":"j","attempt":0,"ratio":2}').ratio == 2.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "resource_meta is not valid JSON for JobMeta"),
        (b"\xff\xfe", "resource_meta is not valid JSON for JobMeta"),
        (b"[1, 2]", "expected object for JobMeta, got list"),
        (b'{"attempt": 1}', "missing field(s) job_id for JobMeta"),
        (b'{"job_id": "j", "attempt": 1, "token": "x"}', "unknown field(s) token for JobMeta"),
        (b'{"job_id": 5, "attempt": 1}', "resource_meta.job_id: expected str, got int 5"),
        (b'{"job_id": "j", "attempt": true}', "resource_meta.attempt: expected int, got bool True"),
        (b'{"job_id": "j", "attempt": 1, "tags": "a"}', "resource_meta.tags: expected list, got str"),
        (b'{"job_id": "j", "attempt": 1, "cluster": {"name": "c"}}', "missing field(s) size for Cluster"),
        (b'{"job_id": "j", "attempt": 1, "extra": {"x": "1"}}', "resource_meta.extra.x: expected int"),
    ],
)
def test_bad_bytes_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(InvalidResourceMetaError) as info:
        JobMeta.decode(data)
    assert message in str(info.value)


@dataclass
class Node:
    children: list[Node]


@dataclass
class TreeMeta(ResourceMeta):
    root: Node


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (JobMeta, b'{"job_id": "j", "attempt": 1, "tags": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
        (TreeMeta, b'{"root": ' + b'{"children": [' * 400 + b"]}" * 400 + b"}"),
    ],
    ids=["deeper-than-json-parses", "deeper-than-the-converters-recurse"],
)
def test_deeply_nested_meta_is_invalid_not_a_recursion_error(cls: type[ResourceMeta], data: bytes) -> None:
    """Hostile resource_meta under the size limit, nested past Python's recursion limit."""
    assert len(data) < MAX_RESOURCE_META_BYTES
    with pytest.raises(InvalidResourceMetaError, match=f"resource_meta .*{cls.__name__}"):
        cls.decode(data)


@dataclass
class FlatMeta(ResourceMeta):
    job_id: str
    region: str | None
    attempt: int
    done: bool
    zone: str = ""


@pytest.mark.parametrize(
    "meta",
    [
        FlatMeta(job_id="j-1", region=None, attempt=3, done=True),
        FlatMeta(job_id='q"u\\o\nte \u00e9\u2603 \U0001f600 \x00', region="eu", attempt=-(2**70), done=False, zone="b"),
        FlatMeta(job_id="j", region="eu", attempt=1.5, done=False),  # type: ignore[arg-type]  # a float: general path
        JobMeta(job_id="j-1", attempt=2, ratio=0.5, tags=["a"], cluster=Cluster("c", 3), extra={"x": 1}),
    ],
)
def test_encoding_is_compact_sorted_ascii_json(meta: ResourceMeta) -> None:
    expected = json.dumps(dataclasses.asdict(meta), sort_keys=True, separators=(",", ":")).encode()
    assert meta.encode() == expected


def test_oversized_meta_is_refused_at_encode() -> None:
    meta = JobMeta(job_id="x" * MAX_RESOURCE_META_BYTES, attempt=0)
    with pytest.raises(ValueError, match="over the 65536 byte limit"):
        meta.encode()


def test_task_category_is_hashable_and_printable() -> None:
    assert {TaskCategory("bq"): 1}[TaskCategory("bq", 0)] == 1
    assert str(TaskCategory("bq", 2)) == "bq_v2"


@dataclass
class PolledMeta(ResourceMeta):
    job_id: str
    inputs: dict[str, str] | None = None
    tags: list[str] = field(default_factory=list)
    deadline: float | None = None


@pytest.mark.parametrize(
    ("deadline", "expected"), [(b"null", None), (b"1.5", 1.5), (b"2", 2.0), (b"-0", 0.0), (b"1e3", 1000.0)]
)
def test_optional_float_fields_take_none_and_numbers_as_floats(deadline: bytes, expected: float | None) -> None:
    value = PolledMeta.decode(b'{"job_id":"j","deadline":' + deadline + b"}").deadline
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("value", [b"true", b'"1.5"', b"[1]"])
def test_optional_float_fields_refuse_other_values(value: bytes) -> None:
    with pytest.raises(InvalidResourceMetaError, match=r"resource_meta\.deadline"):
        PolledMeta.decode(b'{"job_id":"j","deadline":' + value + b"}")


def test_a_str_decodes_as_its_bytes_do_and_a_bytearray_is_refused() -> None:
    data = PolledMeta(job_id="j", tags=["a"]).encode()
    assert PolledMeta.decode(data.decode()) == PolledMeta.decode(data) == PolledMeta(job_id="j", tags=["a"])
    with pytest.raises(InvalidResourceMetaError):
        PolledMeta.decode(bytearray(data))  # type: ignore[arg-type]
