"""FileSensor: waits for a file (local path, any fsspec URL, or a glob) to exist and settle."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.utils import get_protocol

from .._pool import ClientPool
from .._runner import run_sync
from ._base import BaseSensor

__all__ = ["FileMatch", "FileSensor", "FileSensorConfig"]

_MAX_TRACKED_PATHS = 4096

logger = logging.getLogger("flyteagents.sensor")


@dataclass
class FileSensorConfig:
    """How a FileSensor decides a file is ready, and how it reaches the filesystem.

    Args:
        min_size: a file counts only once it holds at least this many bytes.
        stable: a file counts only once its size is the same at two pokes in a row
            (so a file still being written is not reported).
        storage_options: fsspec options for the path's filesystem, such as
            ``{"endpoint_url": "http://127.0.0.1:5000"}`` for S3. They travel in the task
            template: never put a secret here; credentials come from the environment.
    """

    min_size: int | None = None
    stable: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileMatch:
    """A FileSensor's outputs: the first matching path and every matching path, sorted."""

    path: str = ""
    paths: list[str] = field(default_factory=list)


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


async def _open_async(key: tuple[str, str]) -> Any:
    protocol, options = key
    cls = fsspec.get_filesystem_class(protocol)
    # Listings are cached by default; a sensor must see files that appear later.
    fs = cls(asynchronous=True, skip_instance_cache=True, **{"use_listings_cache": False, **json.loads(options)})
    set_session = getattr(fs, "set_session", None)
    if set_session is not None:
        await set_session()
    return fs


async def _close_async(fs: Any) -> None:
    if getattr(fs, "_s3creator", None) is not None:  # s3fs
        await fs._s3creator.__aexit__(None, None, None)


def _open_s3_head(options: str) -> Any:
    from ._s3 import S3Head  # botocore's signer, imported only once an S3 path is polled

    return S3Head(json.loads(options))


#: Most filesystems (and S3 probes) kept per loop: their storage options come from task templates.
MAX_FILESYSTEMS = 64
#: Async filesystems (s3fs, ...) are bound to the event loop they were made on.
_ASYNC_FILESYSTEMS: ClientPool[tuple[str, str], Any] = ClientPool(_open_async, _close_async, MAX_FILESYSTEMS)
_S3_HEADS: ClientPool[str, Any] = ClientPool(_open_s3_head, max_size=MAX_FILESYSTEMS)


async def filesystem(protocol: str, options: dict[str, Any]) -> fsspec.AbstractFileSystem:
    """The filesystem for ``protocol`` and these storage options, shared by every poke.

    Async filesystems are kept per event loop; sync ones come from fsspec's own instance cache.
    """
    cls = fsspec.get_filesystem_class(protocol)
    if not issubclass(cls, AsyncFileSystem) or not cls.async_impl:
        return cls(**options)  # type: ignore[no-any-return]
    return await _ASYNC_FILESYSTEMS.get((protocol, json.dumps(options, sort_keys=True)))  # type: ignore[no-any-return]


async def s3_head(options: dict[str, Any]) -> Any:
    """The one-request S3 probe (an ``_s3.S3Head``) for these options on the running loop; None if they allow none."""
    from ._s3 import S3Head

    if not S3Head.supports(options):
        return None
    return await _S3_HEADS.get(json.dumps(options, sort_keys=True))


class FileSensor(BaseSensor):
    """Waits until a file exists, and optionally is big enough and done growing.

    The ``path`` input may be a local path, any fsspec URL (``s3://bucket/key`` through
    s3fs, ``gs://``, ...) or a glob (``s3://bucket/day=*/part-*.parquet``). Outputs a
    FileMatch: ``path`` (the first match) and ``paths`` (all matches that are ready).

    Args:
        name: the task's name.
        min_size: count a file only once it holds at least this many bytes.
        stable: count a file only once its size is unchanged across two pokes. Both
            pokes must reach the same engine process; on another replica the first
            poke only records the size.
        storage_options: non-secret fsspec options (see FileSensorConfig).
        sensor_config: a whole FileSensorConfig, instead of the three options above.
        **options: BaseSensor's options (``timeout``, ``poke_interval``, ``soft_fail``, ...).

    Example:
        ```python
        wait = FileSensor(name="wait_for_export", stable=True, timeout=3600, poke_interval=30)
        @workflow
        def wf(day: str) -> str:
            found = wait(path=f"s3://exports/{day}/*.csv")
            return load(path=found.path)
        ```
    """

    def __init__(
        self,
        name: str,
        min_size: int | None = None,
        stable: bool = False,
        storage_options: dict[str, Any] | None = None,
        sensor_config: FileSensorConfig | None = None,
        **options: Any,
    ) -> None:
        if sensor_config is None:
            sensor_config = FileSensorConfig(
                min_size=min_size, stable=stable, storage_options=dict(storage_options or {})
            )
        super().__init__(name=name, sensor_config=sensor_config, **options)
        self._sizes: OrderedDict[str, dict[str, int]] = OrderedDict()

    @property
    def config(self) -> FileSensorConfig:
        """This sensor's FileSensorConfig."""
        return self.sensor_config  # type: ignore[no-any-return]

    async def poke(self, path: str) -> FileMatch | None:
        """The ready files matching ``path``, or None while there are none."""
        found = await self._stat(path)
        ready = self._ready(path, found)
        if not ready:
            return None
        return FileMatch(path=ready[0], paths=ready)

    async def _stat(self, path: str) -> dict[str, int]:
        """Size of each existing file matching ``path`` (full URLs as keys)."""
        protocol = get_protocol(path)
        if protocol in ("s3", "s3a") and not _has_magic(path) and not path.endswith("/"):
            # One HEAD per poke for an object key; s3fs would add a LIST whenever it is missing.
            from ._s3 import FALLBACK

            head = await s3_head(self.config.storage_options)
            bucket, _, key = path.split("://", 1)[1].partition("/")
            if head is not None and key:
                size = await head.size(bucket, key)
                if size is not FALLBACK:
                    return {} if size is None else {f"s3://{bucket}/{key}": size}
        fs = await filesystem(protocol, self.config.storage_options)
        if _has_magic(path):
            if isinstance(fs, AsyncFileSystem) and fs.async_impl:
                entries = await fs._glob(path, detail=True)
            else:
                entries = await run_sync(fs.glob, path=path, detail=True)
        else:
            try:
                if isinstance(fs, AsyncFileSystem) and fs.async_impl:
                    info = await fs._info(path)
                else:
                    info = await run_sync(fs.info, path=path)
            except FileNotFoundError:
                return {}
            entries = {info["name"]: info}
        return {self._url(protocol, name): int(info.get("size") or 0) for name, info in entries.items()}

    @staticmethod
    def _url(protocol: str, name: str) -> str:
        if protocol in ("file", "local") or "://" in name:
            return name
        return f"{protocol}://{name}"

    def _ready(self, pattern: str, found: dict[str, int]) -> list[str]:
        config = self.config
        previous = self._sizes.pop(pattern, None)
        if config.stable:
            self._sizes[pattern] = found
            while len(self._sizes) > _MAX_TRACKED_PATHS:
                self._sizes.popitem(last=False)
        ready = []
        for name, size in sorted(found.items()):
            if config.min_size is not None and size < config.min_size:
                continue
            if config.stable and (previous is None or previous.get(name) != size):
                continue
            ready.append(name)
        return ready
