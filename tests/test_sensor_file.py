"""FileSensor against a local directory and against S3 on a real moto_server process."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
from flytekit import task, workflow

from flyteagents import TaskFailedError
from flyteagents.plugin import close_clients as close_loop_clients
from flyteagents.sensor import FileMatch, FileSensor
from flyteagents.sensor._file import filesystem, s3_head
from flyteagents.testing import MotoServer
from flyteagents.testing._moto import MOTO_CREDENTIALS

# Async tests share the session loop, so the clients their pokes open are closed at the end.
on_session_loop = pytest.mark.asyncio(loop_scope="session")


def later(delay: float, fn: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), fn(*args)), daemon=True)
    thread.start()
    return thread


@task
def read_local(path: str) -> str:
    return Path(path).read_text()


local_sensor = FileSensor(name="local_file", poke_interval=0.02, timeout=20)


@workflow
def local_wf(path: str) -> str:
    found = local_sensor(path=path)
    return read_local(path=found.path)


def test_local_file_appearing_later_is_found_and_passed_on(tmp_path: Path) -> None:
    target = tmp_path / "export.csv"
    writer = later(0.2, target.write_text, "a,b\n")
    start = time.monotonic()
    assert local_wf(path=str(target)) == "a,b\n"
    assert time.monotonic() - start >= 0.2
    writer.join()


def test_local_glob_and_min_size(tmp_path: Path) -> None:
    (tmp_path / "part-0.csv").write_text("x" * 10)
    (tmp_path / "part-1.csv").write_text("x" * 2)
    (tmp_path / "other.txt").write_text("x" * 100)
    sensor = FileSensor(name="glob_min", min_size=5, poke_interval=0.02, timeout=20)
    found = sensor(path=str(tmp_path / "part-*.csv"))
    assert found.paths == [str(tmp_path / "part-0.csv")]
    assert found.path == str(tmp_path / "part-0.csv")


def test_local_timeout_names_the_sensor(tmp_path: Path) -> None:
    sensor = FileSensor(name="missing", poke_interval=0.02, timeout=0.1)
    with pytest.raises(TaskFailedError, match=r"timed out after 0\.1s"):
        sensor(path=str(tmp_path / "never.csv"))


@on_session_loop
async def test_local_growing_file_reported_only_once_stable(tmp_path: Path) -> None:
    sensor = FileSensor(name="stable_local", stable=True)
    target = tmp_path / "growing.bin"
    assert await sensor.poke(path=str(target)) is None
    target.write_bytes(b"x" * 10)
    assert await sensor.poke(path=str(target)) is None, "first sight: size not yet known to be stable"
    target.write_bytes(b"x" * 20)
    assert await sensor.poke(path=str(target)) is None, "still growing"
    assert await sensor.poke(path=str(target)) == FileMatch(path=str(target), paths=[str(target)])


@pytest_asyncio.fixture(scope="module", loop_scope="session", autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Close the S3 clients the direct pokes below opened on the test loop."""
    yield
    await close_loop_clients()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in MOTO_CREDENTIALS.items():
            mp.setenv(key, value)
        with MotoServer() as server:
            yield server


@pytest.fixture
def bucket(moto: MotoServer) -> tuple[Any, str]:
    s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, **moto.credentials)
    name = f"sensor-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return s3, name


@task
def key_of(path: str, count: int) -> str:
    return f"{path.split('/', 3)[-1]}#{count}"


def test_s3_object_appearing_later_is_found(moto: MotoServer, bucket: tuple[Any, str]) -> None:
    s3, name = bucket
    sensor = FileSensor(
        name="s3_file", storage_options={"endpoint_url": moto.endpoint_url}, poke_interval=0.05, timeout=30
    )

    @workflow
    def wf(path: str) -> str:
        found = sensor(path=path)
        return key_of(path=found.path, count=1)

    writer = later(0.3, lambda: s3.put_object(Bucket=name, Key="in/ready.json", Body=b"{}"))
    start = time.monotonic()
    assert wf(path=f"s3://{name}/in/ready.json") == "in/ready.json#1"
    assert time.monotonic() - start >= 0.3
    writer.join()


def test_s3_glob_matches_every_ready_object(moto: MotoServer, bucket: tuple[Any, str]) -> None:
    s3, name = bucket
    for key in ("data/day=1/part-0.csv", "data/day=2/part-0.csv", "data/day=2/notes.txt"):
        s3.put_object(Bucket=name, Key=key, Body=b"1,2\n")
    sensor = FileSensor(name="s3_glob", storage_options={"endpoint_url": moto.endpoint_url}, poke_interval=0.05)
    found = sensor(path=f"s3://{name}/data/day=*/part-*.csv")
    assert found.paths == [f"s3://{name}/data/day=1/part-0.csv", f"s3://{name}/data/day=2/part-0.csv"]


@on_session_loop
async def test_s3_growing_object_reported_only_once_stable(moto: MotoServer, bucket: tuple[Any, str]) -> None:
    s3, name = bucket
    sensor = FileSensor(name="s3_stable", stable=True, storage_options={"endpoint_url": moto.endpoint_url})
    path = f"s3://{name}/upload.bin"
    assert await sensor.poke(path=path) is None
    s3.put_object(Bucket=name, Key="upload.bin", Body=b"x" * 100)
    assert await sensor.poke(path=path) is None
    s3.put_object(Bucket=name, Key="upload.bin", Body=b"x" * 200)
    assert await sensor.poke(path=path) is None, "grew since the last poke"
    assert await sensor.poke(path=path) == FileMatch(path=path, paths=[path])


@on_session_loop
async def test_s3_filesystem_is_shared_across_pokes(moto: MotoServer) -> None:
    options = {"endpoint_url": moto.endpoint_url}
    first = await filesystem("s3", options)
    assert await filesystem("s3", dict(options)) is first
    assert await filesystem("s3", {"endpoint_url": moto.endpoint_url + "/"}) is not first


@on_session_loop
async def test_s3_prefix_waits_for_any_object_under_it(moto: MotoServer, bucket: tuple[Any, str]) -> None:
    s3, name = bucket
    sensor = FileSensor(name="s3_prefix", storage_options={"endpoint_url": moto.endpoint_url})
    assert await sensor.poke(path=f"s3://{name}/out/") is None
    s3.put_object(Bucket=name, Key="out/part-0.csv", Body=b"1")
    found = await sensor.poke(path=f"s3://{name}/out/")
    assert found is not None and found.path == f"s3://{name}/out"


@on_session_loop
async def test_s3_options_the_probe_cannot_honour_go_through_s3fs(moto: MotoServer, bucket: tuple[Any, str]) -> None:
    s3, name = bucket
    options = {"endpoint_url": moto.endpoint_url, "config_kwargs": {"connect_timeout": 5}}
    assert await s3_head(options) is None
    assert await s3_head({"endpoint_url": moto.endpoint_url}) is not None
    sensor = FileSensor(name="s3_options", storage_options=options)
    assert await sensor.poke(path=f"s3://{name}/k.bin") is None
    s3.put_object(Bucket=name, Key="k.bin", Body=b"12345")
    assert await sensor.poke(path=f"s3://{name}/k.bin") == FileMatch(
        path=f"s3://{name}/k.bin", paths=[f"s3://{name}/k.bin"]
    )


async def test_filesystems_kept_per_loop_are_bounded_whatever_the_templates_ask_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Storage options come from task templates: one filesystem each, but not without end on the service's loop."""
    from flyteagents.sensor._file import _ASYNC_FILESYSTEMS, _S3_HEADS, filesystem

    assert _ASYNC_FILESYSTEMS.max_size is not None and _S3_HEADS.max_size is not None
    monkeypatch.setattr(_ASYNC_FILESYSTEMS, "max_size", 3)  # the same eviction as at 64, sooner
    for i in range(8):
        await filesystem("s3", {"anon": True, "endpoint_url": f"http://127.0.0.1:{i + 1}"})
    assert len(_ASYNC_FILESYSTEMS.clients()) == 3
    await close_loop_clients()
