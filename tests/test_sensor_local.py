"""Sensors run locally inside flytekit workflows: class and decorated sensors, outputs, timeouts, errors."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from flytekit import task, workflow

from flyteagents import BaseSensor, TaskFailedError, sensor
from flyteagents.sensor import FunctionSensor

POKES: dict[str, int] = {}


def _poked(key: str) -> int:
    POKES[key] = POKES.get(key, 0) + 1
    return POKES[key]


@dataclass
class Countdown:
    target: int
    label: str = "ready"


@dataclass
class Ready:
    key: str = ""
    pokes: int = 0
    label: str = ""


class CountdownSensor(BaseSensor):
    """Done at the config's ``target``-th poke for a key; outputs what it saw."""

    async def poke(self, key: str) -> Ready | None:
        n = _poked(key)
        config: Countdown = self.sensor_config
        if n < config.target:
            return None
        return Ready(key=key, pokes=n, label=config.label)


class NoInputSensor(BaseSensor):
    async def poke(self) -> bool:
        return _poked("no-input") >= 2


class NeverSensor(BaseSensor):
    async def poke(self, key: str) -> bool:
        _poked(key)
        return False


@dataclass
class Found:
    where: str = "nowhere"
    hits: list[int] = field(default_factory=list)


class NeverWithOutputs(BaseSensor):
    async def poke(self, key: str) -> Found | None:
        _poked(key)
        return None


class FlakySensor(BaseSensor):
    """Raises ConnectionError for the first ``target`` pokes of a key, then is done."""

    async def poke(self, key: str) -> bool:
        n = _poked(key)
        if n <= self.sensor_config.target:
            raise ConnectionError(f"network down (poke {n})")
        return True


class BrokenSensor(BaseSensor):
    async def poke(self, key: str) -> bool:
        raise ValueError(f"bad key {key!r}")


@sensor(poke_interval=0.01, sensor_config=Countdown(target=3))
async def countdown_fn(key: str, sensor_config: Countdown) -> Ready | None:
    n = _poked(key)
    return Ready(key=key, pokes=n, label=sensor_config.label) if n >= sensor_config.target else None


@sensor(poke_interval=0.01)
def blocking_flag(key: str, after: int) -> bool:
    # A plain def poke runs on the sensor thread pool; sleeping here must not stall the loop.
    time.sleep(0.001)
    return _poked(key) >= after


@task
def describe(key: str, pokes: int, label: str) -> str:
    return f"{key}:{pokes}:{label}"


countdown = CountdownSensor(name="countdown", sensor_config=Countdown(target=3, label="go"), poke_interval=0.01)


@workflow
def class_wf(key: str) -> str:
    r = countdown(key=key)
    return describe(key=r.key, pokes=r.pokes, label=r.label)


@workflow
def decorated_wf(key: str, flag_key: str) -> str:
    r = countdown_fn(key=key)
    flag = blocking_flag(key=flag_key, after=2)
    r >> flag
    return describe(key=r.key, pokes=r.pokes, label=r.label)


def test_class_sensor_in_workflow_outputs_reach_next_task() -> None:
    assert class_wf(key="class-1") == "class-1:3:go"
    assert POKES["class-1"] == 3


def test_decorated_sensor_in_workflow_with_config_and_plain_def() -> None:
    assert isinstance(countdown_fn, FunctionSensor)
    assert decorated_wf(key="fn-1", flag_key="fn-1-flag") == "fn-1:3:ready"
    assert POKES["fn-1"] == 3
    assert POKES["fn-1-flag"] == 2


def test_decorated_sensor_interface_skips_config_parameter() -> None:
    assert list(countdown_fn.python_interface.inputs) == ["key"]
    assert list(countdown_fn.python_interface.outputs) == ["key", "pokes", "label"]


def test_no_input_poke() -> None:
    no_input = NoInputSensor(name="no_input", poke_interval=0.01)

    @workflow
    def wf() -> None:
        no_input()

    wf()
    assert POKES["no-input"] == 2


def test_poke_interval_is_honoured_locally() -> None:
    slow = CountdownSensor(name="slow", sensor_config=Countdown(target=4), poke_interval=0.1)
    start = time.monotonic()
    assert slow(key="interval-1").pokes == 4
    # Four pokes are three intervals apart.
    assert time.monotonic() - start >= 0.3


def test_timeout_fails_with_message() -> None:
    never = NeverSensor(name="never", timeout=0.2, poke_interval=0.02)
    with pytest.raises(TaskFailedError, match=r"timed out after 0.2s") as info:
        never(key="timeout-1")
    assert info.value.phase == "FAILED"
    assert POKES["timeout-1"] >= 2


def test_soft_fail_succeeds_skipped_with_default_outputs() -> None:
    skipping = NeverWithOutputs(name="skipping", timeout=0.1, poke_interval=0.02, soft_fail=True)

    @task
    def after(where: str, hits: list[int]) -> str:
        return f"{where}{hits}"

    @workflow
    def wf() -> str:
        found = skipping(key="soft-1")
        return after(where=found.where, hits=found.hits)

    assert wf() == "nowhere[]"


def test_soft_fail_needs_output_defaults() -> None:
    class NoDefaults(BaseSensor):
        async def poke(self) -> Countdown | None:
            return None

    with pytest.raises(TypeError, match=r"soft_fail needs a default.*target"):
        NoDefaults(name="no_defaults", soft_fail=True)


def test_retryable_errors_are_counted_then_the_sensor_recovers() -> None:
    flaky = FlakySensor(name="flaky", sensor_config=Countdown(target=2), poke_interval=0.01, max_consecutive_errors=3)
    flaky(key="flaky-1")
    assert POKES["flaky-1"] == 3


def test_consecutive_retryable_errors_fail() -> None:
    flaky = FlakySensor(name="flaky", sensor_config=Countdown(target=99), poke_interval=0.01, max_consecutive_errors=3)
    with pytest.raises(TaskFailedError, match=r"after 3 consecutive poke errors; last: ConnectionError: network down"):
        flaky(key="flaky-2")
    assert POKES["flaky-2"] == 3


def test_non_retryable_error_fails_at_once_with_message() -> None:
    broken = BrokenSensor(name="broken", poke_interval=0.01)
    with pytest.raises(TaskFailedError, match=r"ValueError: bad key 'k'"):
        broken(key="k")


def test_poke_signature_is_checked_at_definition() -> None:
    with pytest.raises(TypeError, match="'-> bool' or '-> T \\| None'"):

        @sensor
        async def bad(key: str) -> str:
            return key

    with pytest.raises(TypeError, match="needs a type annotation"):

        @sensor
        async def untyped(key) -> bool:  # type: ignore[no-untyped-def]
            return True


def test_local_run_backs_off_and_shows_the_poke_history(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTEAGENTS_PROGRESS_PERIOD", "0")  # a line for every poke
    backing_off = CountdownSensor(
        name="backing_off", sensor_config=Countdown(target=4), poke_interval=0.1, backoff=2.0, max_poke_interval=0.2
    )
    start = time.monotonic()
    assert backing_off(key="backoff-local").pokes == 4
    # waits of 0.1, 0.2 (capped) and 0.2 s, each up to a tenth longer
    assert 0.5 <= time.monotonic() - start < 1.5
    lines = [line for line in capsys.readouterr().err.splitlines() if "backing_off" in line]
    assert any("RUNNING - waiting (" in line and ", 1 poke, next in 0.1s)" in line for line in lines), lines
    assert any(", 3 pokes, next in 0.2s)" in line for line in lines), lines


def test_local_run_shows_the_last_poke_error(capsys: pytest.CaptureFixture[str]) -> None:
    flaky = FlakySensor(name="flaky_shown", sensor_config=Countdown(target=3), poke_interval=0.01)
    flaky(key="flaky-shown")
    err = capsys.readouterr().err
    first = next(line for line in err.splitlines() if "RUNNING - poke error 1/5" in line)
    assert ", 1 poke, next in " in first and "last error" not in first  # the error is the message: not repeated
    final = next(line for line in err.splitlines() if "flaky_shown: SUCCEEDED after " in line)
    assert ", 4 pokes, last error: " in final


def test_bad_backoff_is_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="backoff must be between 1"):
        NeverSensor(name="bad_backoff", backoff=0.5)
    with pytest.raises(ValueError, match="max_interval"):
        NeverSensor(name="bad_cap", poke_interval=10, backoff=2, max_poke_interval=5)
