"""FileSensor: waits for a file (local path, any fsspec URL, or a glob) to exist and settle."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.utils import get_protocol

from ._base import DEFAULT_MAX_CONSECUTIVE_ERRORS, BaseSensor, _Seconds
from ._engine import run_sync
from ._s3 import FALLBACK, S3Head

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


class _Filesystems:
    """fsspec filesystem instances shared by every poke.

    Async filesystems (s3fs, ...) are bound to an event loop, so they are kept per loop;
    sync ones are shared process-wide and called on the sensors' thread pool.
    """

    def __init__(self) -> None:
        self._sync: dict[tuple[str, str], fsspec.AbstractFileSystem] = {}
        self._async: dict[asyncio.AbstractEventLoop, dict[tuple[str, str], Any]] = {}
        self._lock = threading.Lock()

    async def get(self, protocol: str, options: dict[str, Any]) -> fsspec.AbstractFileSystem:
        key = (protocol, json.dumps(options, sort_keys=True))
        cls = fsspec.get_filesystem_class(protocol)
        if not issubclass(cls, AsyncFileSystem) or not cls.async_impl:
            with self._lock:
                fs = self._sync.get(key)
                if fs is None:
                    fs = self._sync[key] = cls(**options)
            return fs
        loop = asyncio.get_running_loop()
        per_loop = self._for_loop(loop)
        fs = per_loop.get(key)
        if fs is None:
            # Listings are cached by default; a sensor must see files that appear later.
            opts = {"use_listings_cache": False, **options}
            fs = cls(asynchronous=True, skip_instance_cache=True, **opts)
            set_session = getattr(fs, "set_session", None)
            if set_session is not None:
                await set_session()
            per_loop[key] = fs
        return fs

    def _for_loop(self, loop: asyncio.AbstractEventLoop) -> dict[tuple[str, str], Any]:
        per_loop = self._async.get(loop)
        if per_loop is None:
            with self._lock:
                # Each local run has a loop of its own: forget the clients of loops that have closed.
                for closed in [old for old in self._async if old.is_closed()]:
                    del self._async[closed]
                per_loop = self._async[loop] = {}
        return per_loop

    async def aclose_loop(self) -> None:
        """Close the clients made on the running loop (a local run calls this before its loop ends)."""
        with self._lock:
            per_loop = self._async.pop(asyncio.get_running_loop(), {})
        for client in per_loop.values():
            try:
                if isinstance(client, S3Head):
                    await client.aclose()
                elif getattr(client, "_s3creator", None) is not None:  # s3fs
                    await client._s3creator.__aexit__(None, None, None)
            except Exception as exc:  # closing is best effort: the run's outcome stands
                logger.debug("closing %r failed: %s", client, exc)

    def s3_head(self, options: dict[str, Any]) -> S3Head | None:
        """The one-request S3 probe for these options on the running loop, if they allow one."""
        if not S3Head.supports(options):
            return None
        per_loop = self._for_loop(asyncio.get_running_loop())
        key = ("s3-head", json.dumps(options, sort_keys=True))
        head = per_loop.get(key)
        if head is None:
            head = per_loop[key] = S3Head(options)
        return head  # type: ignore[no-any-return]


_FILESYSTEMS = _Filesystems()


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
        timeout: as for BaseSensor.
        poke_interval: as for BaseSensor.
        soft_fail: as for BaseSensor.
        max_consecutive_errors: as for BaseSensor.

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
        timeout: _Seconds | None = None,
        poke_interval: _Seconds | None = None,
        soft_fail: bool = False,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        **kwargs: Any,
    ) -> None:
        if sensor_config is None:
            sensor_config = FileSensorConfig(
                min_size=min_size, stable=stable, storage_options=dict(storage_options or {})
            )
        super().__init__(
            name=name,
            timeout=timeout,
            sensor_config=sensor_config,
            poke_interval=poke_interval,
            soft_fail=soft_fail,
            max_consecutive_errors=max_consecutive_errors,
            **kwargs,
        )
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
            head = _FILESYSTEMS.s3_head(self.config.storage_options)
            bucket, _, key = path.split("://", 1)[1].partition("/")
            if head is not None and key:
                size = await head.size(bucket, key)
                if size is not FALLBACK:
                    return {} if size is None else {f"s3://{bucket}/{key}": size}
        fs = await _FILESYSTEMS.get(protocol, self.config.storage_options)
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
