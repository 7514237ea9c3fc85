"""The wire agreement the connector service rests on: flyteidl2's connector messages are flyteidl's twins.

The service reads each Flyte 2 request as flyteidl's message of the same name and sends flyteidl's
answers as Flyte 2's. That is sound only while every field number the two share has the same wire
type (and, for messages and enums, the same shape all the way down); this checks it against the
installed packages, so an upgrade of either that breaks it fails here, not in production.
"""

from __future__ import annotations

import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2 as v1_literals
from flyteidl.core import tasks_pb2 as v1_tasks
from flyteidl2.connector import connector_pb2
from flyteidl2.core import literals_pb2, tasks_pb2
from flyteidl2.task import common_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

# (flyteidl's message, flyteidl2's message, flyteidl's fields flyteidl2 lacks)
REQUESTS = [
    (agent_pb2.CreateTaskRequest, connector_pb2.CreateTaskRequest, set()),
    (agent_pb2.GetTaskRequest, connector_pb2.GetTaskRequest, {"task_type"}),  # deprecated in v1, gone in v2
    (agent_pb2.DeleteTaskRequest, connector_pb2.DeleteTaskRequest, {"task_type"}),
    (agent_pb2.GetTaskMetricsRequest, connector_pb2.GetTaskMetricsRequest, {"task_type"}),
    (agent_pb2.GetTaskLogsRequest, connector_pb2.GetTaskLogsRequest, {"task_type"}),
]
RESPONSES = [
    (agent_pb2.CreateTaskResponse, connector_pb2.CreateTaskResponse, set()),
    # the service never sets state (deprecated) and clears agent_error before sending
    (agent_pb2.GetTaskResponse, connector_pb2.GetTaskResponse, set()),
    (agent_pb2.Resource, connector_pb2.Resource, {"state", "agent_error"}),
    (agent_pb2.DeleteTaskResponse, connector_pb2.DeleteTaskResponse, set()),
    (agent_pb2.GetTaskMetricsResponse, connector_pb2.GetTaskMetricsResponse, set()),
    (agent_pb2.GetTaskLogsResponse, connector_pb2.GetTaskLogsResponse, set()),
]
PARTS = [
    (v1_literals.LiteralMap, common_pb2.Inputs, set()),  # map<string, Literal> = repeated {key=1, value=2}
    (v1_literals.LiteralMap, common_pb2.Outputs, set()),
    (v1_tasks.TaskTemplate, tasks_pb2.TaskTemplate, set()),
    (agent_pb2.TaskExecutionMetadata, connector_pb2.TaskExecutionMetadata, {"overrides"}),
]


def repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 has is_repeated only, protobuf 5 label only
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def disagreements(v1: Descriptor, v2: Descriptor, path: str, seen: set[tuple[str, str]]) -> list[str]:
    """Where a field number both messages use differs in wire type, cardinality or nested shape."""
    if (v1.full_name, v2.full_name) in seen:
        return []
    seen.add((v1.full_name, v2.full_name))
    found = []
    by_number = {f.number: f for f in v2.fields}
    for a in v1.fields:
        b = by_number.get(a.number)
        if b is None:
            continue
        where = f"{path}.{a.name}"
        if a.type != b.type or repeated(a) != repeated(b):
            found.append(f"{where}: type {a.type}/{b.type}, repeated {repeated(a)}/{repeated(b)}")
        elif a.message_type is not None:
            found += disagreements(a.message_type, b.message_type, where, seen)
        elif a.enum_type is not None:
            values = {v.number: v.name for v in b.enum_type.values}
            found += [f"{where}: enum {v.name}={v.number}" for v in a.enum_type.values if v.number not in values]
    return found


@pytest.mark.parametrize(
    ("v1", "v2", "v1_only"), REQUESTS + RESPONSES + PARTS, ids=lambda x: getattr(x, "__name__", "")
)
def test_shared_field_numbers_agree(v1, v2, v1_only):
    assert disagreements(v1.DESCRIPTOR, v2.DESCRIPTOR, v2.DESCRIPTOR.name, set()) == []
    v2_numbers = {f.number for f in v2.DESCRIPTOR.fields}
    assert {f.name for f in v1.DESCRIPTOR.fields if f.number not in v2_numbers} == v1_only


def test_the_connection_is_the_only_top_level_field_flyteidl_lacks():
    for v1, v2, _ in REQUESTS:
        v1_numbers = {f.number for f in v1.DESCRIPTOR.fields}
        assert {f.name for f in v2.DESCRIPTOR.fields if f.number not in v1_numbers} <= {"connection"}


def test_a_v2_request_reads_as_v1_and_back_without_loss():
    literal = literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=7)))
    request = connector_pb2.CreateTaskRequest(
        template=tasks_pb2.TaskTemplate(type="t", task_type_version=2),
        inputs=common_pb2.Inputs(literals=[common_pb2.NamedLiteral(name="n", value=literal)]),
        output_prefix="s3://b/p",
    )
    request.template.metadata.is_entrypoint = True  # a Flyte-2-only field, kept through the round trip
    v1 = agent_pb2.CreateTaskRequest.FromString(request.SerializeToString())
    assert v1.template.type == "t" and v1.template.task_type_version == 2
    assert v1.inputs.literals["n"].scalar.primitive.integer == 7
    assert connector_pb2.CreateTaskRequest.FromString(v1.SerializeToString()) == request


def test_the_check_sees_a_disagreement():
    # GetTaskRequest's resource_meta (bytes, 2) against CreateTaskRequest's template (a message, 2), and so on
    found = disagreements(agent_pb2.GetTaskRequest.DESCRIPTOR, connector_pb2.CreateTaskRequest.DESCRIPTOR, "x", set())
    assert any(line.startswith("x.resource_meta: type") for line in found)
