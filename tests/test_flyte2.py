"""Flyte 2 (`flyte` SDK) users: sensors and agent tasks from a TaskEnvironment, locally and through the service.

Locally, `flyte.with_runcontext(mode="local").run(...)` runs them in this process through the same
executor as flytekit's local runs. Remotely, the flyte SDK's own serialization makes the template
and `flyteagents serve` answers it over Flyte 2's connector protocol (flyteidl2), as the backend calls it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import flyte
import pytest
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.tools.translator import get_serializable

sys.path.insert(0, str(Path(__file__).parent))
import flyte2_tasks as t
from service_process import TESTS, Service

from flyteagents.flyte2 import AgentTask, BaseSensor, FileSensor
from flyteagents.sensor import BaseSensor as FlytekitSideSensor
from flyteagents.testing.flyte2 import Flyte2Failure, run_on_service, serialize


@pytest.fixture(scope="module", autouse=True)
def flyte_initialized(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("FLYTEAGENTS_F2_JOBS", str(tmp_path_factory.mktemp("f2-jobs")))
    flyte.init()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def local(task, **inputs):
    """Run ``task`` as a Flyte 2 user does locally; its outputs as the next task would get them."""
    outputs = flyte.with_runcontext(mode="local").run(task, **inputs).outputs()
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def write_later(path: Path, data: str, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), path.write_text(data)))
    thread.start()
    return thread


def poke_times(prefix: Path) -> list[float]:
    return [float(x) for x in Path(f"{prefix}.pokes").read_text().split()]


# ---- locally ------------------------------------------------------------------------------------


def test_a_class_sensor_pokes_on_its_interval_until_it_finds_and_outputs(tmp_path):
    prefix = tmp_path / "export"
    writer = write_later(Path(f"{prefix}.ready"), "12345", 0.4)
    key, size = local(t.wait_for_key, prefix=str(prefix))
    writer.join()
    assert (key, size) == (f"{prefix}.ready", 5)
    pokes = poke_times(prefix)
    assert len(pokes) >= 3  # waited, then found
    gaps = [b - a for a, b in itertools.pairwise(pokes)]
    # Pokes are due on a fixed schedule, every poke_interval (lengthened by up to 10% jitter) from
    # the start; each is stamped from a worker thread, whose start varies by a few milliseconds.
    assert sum(gaps) / len(gaps) >= 0.05
    assert min(gaps) >= 0.05 * 0.8


def test_a_sensor_function_runs_from_a_task_environment(tmp_path):
    (tmp_path / "done").write_text("")
    assert local(t.marker_written, directory=str(tmp_path), name="done") is None  # a bool sensor: no outputs
    assert t.marker_written.name in t.sensors_env.tasks


def test_file_sensor_outputs_the_match_and_respects_min_size(tmp_path):
    target = tmp_path / "data.csv"
    target.write_text("")  # there, but empty: min_size=1 keeps waiting
    writer = write_later(target, "a,b\n", 0.3)
    path, paths = local(t.wait_for_file, path=str(target))
    writer.join()
    assert path == str(target) and paths == [str(target)]


def test_timeout_fails_the_run_with_the_sensors_message(tmp_path):
    with pytest.raises(Exception, match=r"timed out after 0\.3s"):
        local(t.wait_briefly, prefix=str(tmp_path / "never"))


def test_soft_fail_succeeds_with_the_outputs_defaults(tmp_path):
    assert local(t.wait_softly, prefix=str(tmp_path / "never")) == ("", -1)


def test_outputs_reach_the_next_task_in_a_flyte2_pipeline(tmp_path):
    prefix = tmp_path / "in"
    Path(f"{prefix}.ready").write_text("abc")
    assert local(t.pipeline, prefix=str(prefix), x=4) == (f"{prefix}.ready", 3, 14)


def test_a_task_timeout_bounds_the_local_run_and_deletes_the_job():
    jobs = Path(os.environ["FLYTEAGENTS_F2_JOBS"])
    before = set(jobs.glob("*.json"))
    with pytest.raises(Exception, match=r"timed out after 0:00:00\.300000"):
        local(t.too_slow_double, x=1)
    (job,) = set(jobs.glob("*.json")) - before
    assert '"state": "CANCELLED"' in job.read_text()
    assert serialize(t.too_slow_double).metadata.timeout.ToTimedelta().total_seconds() == 0.3


def test_options_are_checked_as_on_the_flytekit_side():
    with pytest.raises(ValueError, match="poke_interval must not be negative"):
        t.KeySensor(name="bad", poke_interval=-1)
    with pytest.raises(ValueError, match="max_consecutive_errors must be at least 1"):
        FileSensor(name="bad", max_consecutive_errors=0)


def test_flyte_task_options_go_to_the_flyte_template():
    task = t.KeySensor(name="retrying", retries=3, env_vars={"A": "1"}, poke_interval=2)
    assert task.retries.count == 3 and task.env_vars == {"A": "1"}
    assert task.sensor.poke_interval == 2.0


def test_zero_argument_super_in_a_sensor_method_is_refused_at_class_creation():
    with pytest.raises(TypeError, match="super\\(\\) without arguments"):

        class Bad(BaseSensor):
            async def poke(self) -> bool:
                return await super().poke()


def test_a_task_class_without_an_executor_mixin_is_refused():
    from flytekit.core.base_task import PythonTask
    from flytekit.core.interface import Interface

    plain = PythonTask(task_type="x", name="plain", task_config=None, interface=Interface())
    with pytest.raises(TypeError, match="AsyncAgentExecutorMixin"):
        AgentTask(plain)


def test_the_template_custom_is_the_flytekit_sides():
    settings = SerializationSettings(ImageConfig.auto(img_name="x:1"), project="flyteagents", domain="development")
    flytekit_side = get_serializable(OrderedDict(), settings, t.wait_for_key.sensor).template
    template = serialize(t.wait_for_key)
    custom = dict(template.custom)
    assert template.type == flytekit_side.type == "sensor"
    assert custom["sensor_name"] == "KeySensor._engine_sensor" and custom["sensor_module"] == "flyte2_tasks"
    assert custom == {k: v for k, v in flytekit_side.custom.items()}
    assert [v.key for v in template.interface.inputs.variables] == ["prefix"]
    assert [v.key for v in template.interface.outputs.variables] == ["key", "size"]


def test_the_engine_finds_the_twin_of_a_flyte2_sensor_class():
    twin = t.KeySensor._engine_sensor
    assert issubclass(twin, FlytekitSideSensor)
    assert twin.__qualname__ == "KeySensor._engine_sensor" and twin.__module__ == "flyte2_tasks"
    assert twin.poke is t.KeySensor.__dict__["poke"]


@pytest.mark.slow
def test_ctrl_c_deletes_the_running_job_once(tmp_path):
    jobs = tmp_path / "jobs"
    script = (
        "import flyte, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import flyte2_tasks as t\n"
        "flyte.init()\n"
        "flyte.with_runcontext(mode='local').run(t.slow_double, x=2)\n"
        "print('finished')\n"
    )
    env = {**os.environ, "FLYTEAGENTS_F2_JOBS": str(jobs)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(jobs.glob("*.json")) if jobs.exists() else True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the job was never created"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (job_file,) = jobs.glob("*.json")
    assert b"finished" not in out
    assert b"interrupted, deleting its job" in err
    assert (jobs / "deletions.log").read_text().split() == [job_file.stem]
    assert '"state": "CANCELLED"' in job_file.read_text()


@pytest.mark.slow
def test_ctrl_c_stops_a_waiting_sensor(tmp_path):
    prefix = tmp_path / "never"
    script = (
        "import flyte, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import flyte2_tasks as t\n"
        "flyte.init()\n"
        f"flyte.with_runcontext(mode='local').run(t.wait_for_key, prefix={str(prefix)!r})\n"
        "print('finished')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pokes = Path(f"{prefix}.pokes")
    try:
        deadline = time.monotonic() + 60
        while not pokes.exists() or len(pokes.read_text().split()) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sensor never poked"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"finished" not in out
    assert b"wait_for_key: interrupted, deleting its job" in err
    count = len(pokes.read_text().split())
    time.sleep(0.3)  # six poke intervals: no poke comes after the process has gone
    assert len(pokes.read_text().split()) == count


# ---- through `flyteagents serve`, over Flyte 2's connector protocol -----------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    jobs = os.environ["FLYTEAGENTS_F2_JOBS"]
    svc = Service(tmp_path_factory.mktemp("serve-f2"), "flyte2_tasks", env={"FLYTEAGENTS_F2_JOBS": jobs}).ready()
    yield svc
    svc.stop()


@pytest.mark.slow
def test_each_task_runs_through_the_service_and_its_outputs_feed_the_next(service, tmp_path):
    prefix = tmp_path / "remote"
    Path(f"{prefix}.ready").write_text("abcd")
    Path(tmp_path / "done").write_text("")

    async def scenario():
        key, size = await run_on_service(service.address, t.wait_for_key, prefix=str(prefix))
        path, paths = await run_on_service(service.address, t.wait_for_file, path=key)
        done = await run_on_service(service.address, t.marker_written, directory=str(tmp_path), name="done")
        doubled = await run_on_service(service.address, t.double, x=size)
        return key, size, path, paths, done, doubled

    key, size, path, paths, done, doubled = asyncio.run(scenario())
    assert (key, size, path, paths, done, doubled) == (f"{prefix}.ready", 4, key, [key], None, 8)
    # ... and into a task run locally, as the next action of a run would get them
    assert local(t.double, x=doubled) == 16


@pytest.mark.slow
def test_timeout_and_soft_fail_through_the_service(service, tmp_path):
    async def scenario():
        skipped = await run_on_service(service.address, t.wait_softly, prefix=str(tmp_path / "never"))
        with pytest.raises(Flyte2Failure, match=r"timed out after 0\.3s") as failed:
            await run_on_service(service.address, t.wait_briefly, prefix=str(tmp_path / "never"))
        return skipped, failed.value

    skipped, failure = asyncio.run(scenario())
    assert skipped == ("", -1)
    assert failure.message.startswith("sensor flyte2_tasks.KeySensor._engine_sensor timed out")


def test_time_sensor_waits_for_its_delay_and_outputs_the_moment():
    import datetime

    started = datetime.datetime.now(datetime.timezone.utc)
    target = local(t.wait_a_moment)
    moment = datetime.datetime.fromisoformat(target.replace("Z", "+00:00"))
    assert moment >= started + datetime.timedelta(seconds=0.3) - datetime.timedelta(milliseconds=5)
    assert datetime.datetime.now(datetime.timezone.utc) >= moment


class _LateAPI:
    """An HTTP server answering 503 twice, then 200 with a JSON body; counts the requests."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        calls = self.calls = []

        class Late(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                calls.append(self.path)
                ready = len(calls) >= 3
                body = b'{"state": "ready"}' if ready else b"not yet"
                self.send_response(200 if ready else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Late)
        self.url = f"http://127.0.0.1:{self.server.server_port}/status"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def late_api():
    api = _LateAPI()
    yield api
    api.server.shutdown()


def test_http_sensor_waits_for_a_late_answer_and_outputs_it(late_api):
    status, _, body, url = local(t.wait_for_api, url=late_api.url)
    assert (status, body, url) == (200, '{"state": "ready"}', late_api.url)
    assert len(late_api.calls) == 3


@pytest.mark.slow
def test_time_and_http_sensors_through_the_service(service, late_api):
    import datetime

    async def scenario():
        target = await run_on_service(service.address, t.wait_a_moment)
        answer = await run_on_service(service.address, t.wait_for_api, url=late_api.url)
        return target, answer

    started = datetime.datetime.now(datetime.timezone.utc)
    target, (status, _, body, _) = asyncio.run(scenario())
    assert datetime.datetime.fromisoformat(target) >= started + datetime.timedelta(seconds=0.29)
    assert (status, body) == (200, '{"state": "ready"}') and len(late_api.calls) == 3


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_a_local_run_can_go_through_the_service(service, tmp_path, monkeypatch, capfd, protocol):
    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", service.address)
    monkeypatch.setenv("FLYTEAGENTS_PROTOCOL", protocol)
    prefix = tmp_path / "via"
    Path(f"{prefix}.ready").write_text("xy")
    assert local(t.pipeline, prefix=str(prefix), x=1) == (f"{prefix}.ready", 2, 6)
    assert f"via agent service {service.address}" in capfd.readouterr().err


def test_the_exit_hook_waits_for_all_interrupted_runs_together_not_one_after_another(monkeypatch):
    """At exit after Ctrl-C, N runs whose deletes hang hold the process up to 35 s in all, not N times that."""
    import flyteagents.flyte2 as f2

    waited: list[float] = []

    class Finished(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waited.append(timeout if timeout is not None else float("inf"))
            return super().wait(timeout)  # never set: each run's delete is still going

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        runs = []
        for i in range(3):
            run = f2._Active(f"run{i}", asyncio.run_coroutine_threadsafe(_make_task(), loop).result(5), loop)
            run.finished = Finished()
            runs.append(run)
        monkeypatch.setattr(f2, "_active", set(runs))
        monkeypatch.setattr(f2, "_EXIT_WAIT", 0.3)  # 35 s: a delete's timeout, and 5 s to report it
        f2._cancel_active_runs()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(asyncio.sleep(0))  # the cancelled tasks end
        loop.close()
    assert len(waited) == 3
    assert sum(waited) <= 0.3, waited


async def _make_task() -> asyncio.Task:
    """A run's task on the running loop: a job that never ends."""
    return asyncio.get_running_loop().create_task(asyncio.sleep(3600))
