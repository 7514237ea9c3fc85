"""Decoding resource_meta, remembering what the same bytes decoded to.

FlytePropeller polls every running task with the same resource_meta bytes on each
resync, so a service decodes the same few thousand small JSON documents over and over.
The fields of a decoded ResourceMeta are kept (only when they are all immutable scalars)
and a fresh instance is built from them on the next poll, so agents still get their own object.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .._exceptions import InvalidResourceMetaError
from .._models import MAX_RESOURCE_META_BYTES, ResourceMeta

__all__ = ["MetaDecoder"]

_SCALARS = (str, int, float, bool, type(None))


class MetaDecoder:
    """``decode(metadata_type, data)`` with a bounded memory of recent decodings.

    resource_meta longer than MAX_RESOURCE_META_BYTES (what ResourceMeta.encode allows) is
    refused before it is decoded. The memory is bounded twice: by entries and by the bytes
    of the resource_meta values it keeps (their decoded fields take about as much again);
    it is cleared when either fills up.

    Args:
        size: how many distinct resource_meta values to remember (about the number of
            tasks running at once).
        max_bytes: how many bytes of resource_meta to remember in all.
    """

    def __init__(self, size: int = 8192, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._fields: dict[tuple[type, bytes], dict[str, Any]] = {}
        self._bytes = 0

    def decode(self, metadata_type: type[ResourceMeta], data: bytes) -> ResourceMeta:
        """Decode ``data`` as ``metadata_type``; InvalidResourceMetaError when it cannot be."""
        if len(data) > MAX_RESOURCE_META_BYTES:
            raise InvalidResourceMetaError(
                f"resource_meta is {len(data)} bytes, over the {MAX_RESOURCE_META_BYTES} byte limit"
            )
        key = (metadata_type, data)
        fields = self._fields.get(key)
        if fields is not None:
            return metadata_type(**fields)
        try:
            meta = metadata_type.decode(data)
        except InvalidResourceMetaError:
            raise
        except Exception as exc:  # a metadata type with its own decode
            raise InvalidResourceMetaError(f"resource_meta cannot be decoded: {exc}") from exc
        # Only the stock decoder is known to be a pure function of the bytes and the fields.
        if type(meta) is metadata_type and metadata_type.decode.__func__ is ResourceMeta.decode.__func__:  # type: ignore[attr-defined]
            values = {f.name: getattr(meta, f.name) for f in dataclasses.fields(meta) if f.init}
            if all(isinstance(v, _SCALARS) for v in values.values()):
                if len(self._fields) >= self.size or self._bytes + len(data) > self.max_bytes:
                    self._fields.clear()
                    self._bytes = 0
                self._fields[key] = values
                self._bytes += len(data)
        return meta
