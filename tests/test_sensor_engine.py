"""The sensor engine driven as an agent: templates, resource_meta, config, cache, deadlines, flytekit."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import FlyteContextManager
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskTemplate
from flytekit.sensor.file_sensor import FileSensor as FlytekitFileSensor
from flytekit.tools.translator import get_serializable

from flyteagents import AgentRegistry, BaseSensor, ExternalServiceError, InvalidResourceMetaError, InvalidTaskError
from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.sensor._base import config_from_dict, config_to_dict, type_path

BUILT: list[Any] = []
POKES: dict[str, int] = {}


@dataclass
class Endpoint:
    host: str
    port: int = 80


@dataclass
class Watch:
    endpoint: Endpoint
    tags: list[str] = field(default_factory=list)
    limit: float | None = None


class Threshold:
    """A config with to_dict/from_dict instead of being a dataclass."""

    def __init__(self, at: int) -> None:
        self.at = at

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Threshold:
        return cls(at=d["at"])


@dataclass
class Seen:
    config: str = ""
    n: int = 0


class RecordingSensor(BaseSensor):
    """Records every instance built; done at the ``at``-th poke, reporting the config it saw."""

    def __init__(self, name: str, sensor_config: Any = None, **kwargs: Any) -> None:
        super().__init__(name=name, sensor_config=sensor_config, **kwargs)
        BUILT.append(self)

    async def poke(self, key: str) -> Seen | None:
        POKES[key] = POKES.get(key, 0) + 1
        config = self.sensor_config
        at = config.at if isinstance(config, Threshold) else 1
        if POKES[key] < at:
            return None
        return Seen(config=repr(vars(config)) if config is not None else "", n=POKES[key])


class NoInput(BaseSensor):
    async def poke(self) -> bool:
        return True


class WhenSensor(BaseSensor):
    async def poke(self, when: datetime.datetime) -> bool:
        return True


class DownSensor(BaseSensor):
    async def poke(self) -> bool:
        raise ExternalServiceError("service unavailable (503)", retryable=True)


class Never(BaseSensor):
    async def poke(self) -> bool:
        return False


class FlytekitStyleSensor(FlytekitFileSensor):
    """A flytekit-native sensor subclass, defined the flytekit way."""


def template_of(task: Any) -> TaskTemplate:
    """The template as the engine receives it: through its protobuf form (custom is a Struct)."""
    settings = SerializationSettings(ImageConfig.auto_default_image())
    return TaskTemplate.from_flyte_idl(get_serializable(OrderedDict(), settings, task).template.to_flyte_idl())


def literals(task: Any, **values: Any) -> LiteralMap:
    ctx = FlyteContextManager.current_context()
    return TypeEngine.dict_to_literal_map(ctx, values, task.python_interface.inputs)


def outputs(task: Any, resource: Any) -> dict[str, Any]:
    ctx = FlyteContextManager.current_context()
    return TypeEngine.literal_map_to_kwargs(ctx, resource.outputs, task.python_interface.outputs)


@pytest.fixture
def engine() -> SensorEngine:
    return SensorEngine()


def roundtrip(meta: SensorMetadata) -> SensorMetadata:
    """What travels through FlytePropeller: the bytes, decoded strictly."""
    return SensorMetadata.decode(meta.encode())


def test_entry_point_serves_task_type_sensor() -> None:
    registry = AgentRegistry()
    assert registry.discover()["sensor"] == "flyteagents.sensor._engine:SensorEngine"
    agent = registry.get_agent("sensor")
    assert isinstance(agent, SensorEngine)
    assert [a.name for a in registry.list_agents()] == ["Sensor"]


@pytest.mark.parametrize(
    "config",
    [Watch(endpoint=Endpoint(host="h", port=9), tags=["a", "b"], limit=1.5), Threshold(at=7)],
    ids=["dataclass", "to_dict"],
)
def test_config_round_trip(config: Any) -> None:
    data = config_to_dict(config)
    back = config_from_dict(json.loads(json.dumps(data)), type_path(type(config)))
    assert type(back) is type(config)
    assert config_to_dict(back) == data
    if isinstance(config, Watch):
        assert back == config and isinstance(back.endpoint, Endpoint)


def test_config_must_be_dataclass_or_to_dict() -> None:
    with pytest.raises(TypeError, match="dataclass instance or have to_dict"):
        NoInput(name="x", sensor_config={"plain": "dict"})
    with pytest.raises(TypeError, match="not JSON-safe"):
        NoInput(name="x", sensor_config=Endpoint(host=datetime.datetime.now(), port=1))  # type: ignore[arg-type]


async def test_config_reaches_sensor_and_instances_are_cached(engine: SensorEngine) -> None:
    task = RecordingSensor(name="recording", sensor_config=Threshold(at=2))
    template = template_of(task)
    assert template.custom["sensor_config"] == {"at": 2}
    BUILT.clear()
    metas = [roundtrip(await engine.create(template, "/tmp/out", literals(task, key=f"cache-{i}"))) for i in range(3)]
    assert len(BUILT) == 1, "one sensor per (class, config)"
    assert isinstance(BUILT[0].sensor_config, Threshold) and BUILT[0].sensor_config.at == 2
    assert (await engine.get(metas[0])).phase == TaskExecution.RUNNING
    done = await engine.get(metas[0])
    assert done.phase == TaskExecution.SUCCEEDED
    assert outputs(task, done) == {"config": "{'at': 2}", "n": 2}
    for meta in metas[1:]:
        await engine.get(meta)
    assert len(BUILT) == 1

    other = RecordingSensor(name="recording", sensor_config=Threshold(at=1))
    await engine.get(roundtrip(await engine.create(template_of(other), "/tmp/out", literals(other, key="cache-x"))))
    assert len(BUILT) == 3  # `other` itself, then the engine's one for the new config


class WatchSensor(BaseSensor):
    async def poke(self) -> bool:
        config: Watch = self.sensor_config
        return type(config.endpoint.port) is int and config.limit == 1.0


async def test_dataclass_config_survives_the_template_struct(engine: SensorEngine) -> None:
    # custom travels as a protobuf Struct, where 9 becomes 9.0: the config must come back typed.
    task = WatchSensor(name="watch", sensor_config=Watch(endpoint=Endpoint(host="h", port=9), limit=1.0))
    template = template_of(task)
    assert template.custom["sensor_config"]["endpoint"]["port"] == 9.0
    meta = roundtrip(await engine.create(template, "/tmp/out", None))
    assert (await engine.get(meta)).phase == TaskExecution.SUCCEEDED


async def test_no_input_poke(engine: SensorEngine) -> None:
    task = NoInput(name="no_input")
    meta = roundtrip(await engine.create(template_of(task), "/tmp/out", None))
    assert meta.inputs is None
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.SUCCEEDED


async def test_resource_meta_is_small_json_with_deadline(engine: SensorEngine) -> None:
    task = RecordingSensor(name="recording", timeout=datetime.timedelta(minutes=5), poke_interval=30)
    before = time.time()
    meta = await engine.create(template_of(task), "/tmp/out", literals(task, key="json-1"))
    data = json.loads(meta.encode())
    assert data["inputs"] == {"key": "json-1"}
    assert data["sensor_module"] == __name__ and data["sensor_name"] == "RecordingSensor"
    assert before + 300 <= data["deadline"] <= time.time() + 300
    assert data["poke_interval"] == 30
    assert template_of(task).metadata.timeout in (None, datetime.timedelta(0)), "the engine owns the deadline"


async def test_input_that_cannot_be_carried_is_invalid_and_named(engine: SensorEngine) -> None:
    task = WhenSensor(name="when")
    with pytest.raises(InvalidTaskError, match=r"sensor input 'when' \(datetime\) cannot be carried"):
        await engine.create(template_of(task), "/tmp/out", literals(task, when=datetime.datetime.now()))


@pytest.mark.parametrize(
    "custom, message",
    [
        ({}, "lacks custom.sensor_module"),
        ({"sensor_module": "no_such_module_xyz", "sensor_name": "S"}, "cannot import sensor"),
        ({"sensor_module": "json", "sensor_name": "dumps"}, "is not a sensor"),
        ({"sensor_module": __name__, "sensor_name": "NoInput", "sensor_config": [1]}, "must be an object"),
    ],
)
async def test_bad_templates_are_invalid(engine: SensorEngine, custom: dict[str, Any], message: str) -> None:
    template = template_of(NoInput(name="no_input"))
    template._custom = custom
    with pytest.raises(InvalidTaskError, match=message):
        await engine.create(template, "/tmp/out", None)


async def test_deadline_fails_or_soft_fails(engine: SensorEngine) -> None:
    hard = roundtrip(await engine.create(template_of(Never(name="hard", timeout=0.05)), "/tmp/out", None))
    soft = roundtrip(await engine.create(template_of(Never(name="soft", timeout=0.05, soft_fail=True)), "/o", None))
    assert (await engine.get(hard)).phase == TaskExecution.RUNNING
    await asyncio.sleep(0.06)
    failed = await engine.get(hard)
    assert failed.phase == TaskExecution.FAILED
    assert failed.message is not None and "timed out after 0.05s" in failed.message
    skipped = await engine.get(soft)
    assert skipped.phase == TaskExecution.SUCCEEDED
    assert skipped.custom_info is not None
    assert {"skipped": True, "reason": "timed out after 0.05s"}.items() <= skipped.custom_info.items()
    assert skipped.message is not None and skipped.message.startswith("skipped:")


async def test_retryable_errors_counted_per_sensor_then_fail(engine: SensorEngine) -> None:
    task = DownSensor(name="down", max_consecutive_errors=2)
    meta = roundtrip(await engine.create(template_of(task), "/tmp/out", None))
    first = await engine.get(meta)
    assert first.phase == TaskExecution.RUNNING
    assert first.message == "poke error 1/2: ExternalServiceError: service unavailable (503)"
    assert engine.consecutive_errors(meta.sensor_id) == 1
    second = await engine.get(meta)
    assert second.phase == TaskExecution.FAILED
    assert second.message is not None and "after 2 consecutive poke errors" in second.message
    assert engine.consecutive_errors(meta.sensor_id) == 0


async def test_slow_poke_is_bounded_and_retryable() -> None:
    class Slow(BaseSensor):
        async def poke(self) -> bool:
            await asyncio.sleep(5)
            return True

    globals()["Slow"] = Slow  # the engine imports sensors by module and name
    Slow.__qualname__ = "Slow"
    try:
        engine = SensorEngine(poke_timeout=0.05)
        meta = await engine.create(template_of(Slow(name="slow")), "/tmp/out", None)
        resource = await engine.get(meta)
        assert resource.phase == TaskExecution.RUNNING
        assert resource.message == "poke error 1/5: poke took longer than 0.05s"
    finally:
        del globals()["Slow"]


async def test_flytekit_sensor_templates_are_served(engine: SensorEngine, tmp_path: Path) -> None:
    task = FlytekitFileSensor(name="flytekit_file")
    template = template_of(task)
    assert template.type == "sensor"
    assert template.custom["sensor_module"] == "flytekit.sensor.file_sensor"
    target = tmp_path / "later.txt"
    meta = roundtrip(await engine.create(template, "/tmp/out", literals(task, path=str(target))))
    assert meta.inputs == {"path": str(target)}
    assert (await engine.get(meta)).phase == TaskExecution.RUNNING
    target.write_text("here")
    assert (await engine.get(meta)).phase == TaskExecution.SUCCEEDED


async def test_flytekit_sensor_metadata_decodes(engine: SensorEngine, tmp_path: Path) -> None:
    # resource_meta written by flytekit's own engine, for sensors in flight during a switch-over.
    (tmp_path / "f").write_text("x")
    legacy = {
        "sensor_module": "flytekit.sensor.file_sensor",
        "sensor_name": "FileSensor",
        "sensor_config": None,
        "inputs": {"path": str(tmp_path / "f")},
    }
    meta = SensorMetadata.decode(json.dumps(legacy).encode())
    assert (await engine.get(meta)).phase == TaskExecution.SUCCEEDED


def test_outputs_dataclass_fields_become_outputs() -> None:
    task = RecordingSensor(name="recording")
    assert {f.name for f in dataclasses.fields(Seen)} == set(task.python_interface.outputs)
    assert set(template_of(task).interface.outputs) == {"config", "n"}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "expected object for SensorMetadata"),
        (b'{"sensor_module": "m"}', "missing field.*sensor_name"),
        (b'{"sensor_module": "m", "sensor_name": "n", "extra": 1}', "unknown field.*extra"),
        (b'{"sensor_module": "m", "sensor_name": 3}', r"resource_meta\.sensor_name: expected str"),
        (b'{"sensor_module": "m", "sensor_name": "n", "deadline": "soon"}', "deadline: expected number"),
        (b'{"sensor_module": "m", "sensor_name": "n", "soft_fail": 1}', "soft_fail: expected bool"),
        (b'{"sensor_module": "m", "sensor_name": "n", "inputs": [1]}', "inputs: expected object"),
    ],
)
def test_resource_meta_decode_is_strict(data: bytes, message: str) -> None:
    with pytest.raises(InvalidResourceMetaError, match=message):
        SensorMetadata.decode(data)


def test_resource_meta_decode_types_numbers() -> None:
    meta = SensorMetadata.decode(b'{"sensor_module": "m", "sensor_name": "n", "deadline": 5, "timeout": null}')
    assert meta.deadline == 5.0 and type(meta.deadline) is float and meta.timeout is None
    assert SensorMetadata.decode(meta.encode()) == meta


@dataclass
class Count:
    n: int = 0


class WrongOutputs(BaseSensor):
    async def poke(self) -> Count | None:
        return Count(n="many")  # type: ignore[arg-type]


async def test_outputs_that_do_not_fit_fail_the_task_not_the_rpc(engine: SensorEngine) -> None:
    meta = roundtrip(await engine.create(template_of(WrongOutputs(name="wrong")), "/tmp/out", None))
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.FAILED
    assert resource.message is not None and "outputs do not fit their declared types" in resource.message


class LegacyDown(BaseSensor):
    async def poke(self, key: str) -> bool:
        raise ConnectionError("down")


async def test_errors_are_counted_for_flytekit_written_resource_meta(engine: SensorEngine) -> None:
    legacy = {"sensor_module": __name__, "sensor_name": "LegacyDown", "sensor_config": None, "inputs": {"key": "a"}}
    data = json.dumps(legacy).encode()
    messages = [(await engine.get(SensorMetadata.decode(data))).message for _ in range(2)]
    assert messages == ["poke error 1/5: ConnectionError: down", "poke error 2/5: ConnectionError: down"]
    other = {**legacy, "inputs": {"key": "b"}}
    first_b = await engine.get(SensorMetadata.decode(json.dumps(other).encode()))
    assert first_b.message == "poke error 1/5: ConnectionError: down"
