"""The task's ``outputs.pb``: written by a poke before it deletes messages, read back by a retried poke."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import fsspec
from flyteidl.core import literals_pb2
from flytekit.models.literals import LiteralMap
from fsspec.asyn import AsyncFileSystem
from fsspec.utils import get_protocol

from flyteagents.plugin import run_sync

__all__ = ["outputs_path", "read_outputs", "write_outputs"]

_lock = threading.Lock()
_sync: dict[str, Any] = {}
_async: dict[tuple[int, str], tuple[asyncio.AbstractEventLoop, Any]] = {}


def outputs_path(output_prefix: str) -> str:
    """``{output_prefix}/outputs.pb``, where FlytePropeller reads a task's outputs."""
    return output_prefix.rstrip("/") + "/outputs.pb"


async def _fs(path: str) -> Any:
    protocol = get_protocol(path)
    cls = fsspec.get_filesystem_class(protocol)
    if not (issubclass(cls, AsyncFileSystem) and cls.async_impl):
        with _lock:
            if protocol not in _sync:
                _sync[protocol] = cls()
            return _sync[protocol]
    loop = asyncio.get_running_loop()
    entry = _async.get((id(loop), protocol))
    if entry is None or entry[0] is not loop:
        fs = cls(asynchronous=True, skip_instance_cache=True)
        if hasattr(fs, "set_session"):
            await fs.set_session()
        entry = _async[(id(loop), protocol)] = (loop, fs)
    return entry[1]


async def read_outputs(path: str) -> LiteralMap | None:
    """The LiteralMap at ``path``, or None when there is no such file."""
    fs = await _fs(path)
    try:
        if isinstance(fs, AsyncFileSystem):
            data = await fs._cat_file(path)
        else:
            data = await run_sync(fs.cat_file, path=path)
    except FileNotFoundError:
        return None
    proto = literals_pb2.LiteralMap()
    proto.ParseFromString(data)
    return LiteralMap.from_flyte_idl(proto)


async def write_outputs(path: str, outputs: LiteralMap) -> None:
    """Write ``outputs`` to ``path`` (creating local parent directories)."""
    data = outputs.to_flyte_idl().SerializeToString()
    fs = await _fs(path)
    if isinstance(fs, AsyncFileSystem):
        await fs._pipe_file(path, data)
        return

    def write(path: str, data: bytes) -> None:
        # Write then rename, so a retried poke never reads a half-written file.
        fs.makedirs(fs._parent(path), exist_ok=True)
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        fs.pipe_file(partial, data)
        fs.mv(partial, path)

    await run_sync(write, path=path, data=data)
