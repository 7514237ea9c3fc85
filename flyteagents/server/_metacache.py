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
from .._models import ResourceMeta

__all__ = ["MetaDecoder"]

_SCALARS = (str, int, float, bool, type(None))


class MetaDecoder:
    """``decode(metadata_type, data)`` with a bounded memory of recent decodings.

    Args:
        size: how many distinct resource_meta values to remember (about the number of
            tasks running at once); the memory is cleared when it fills up.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._fields: dict[tuple[type, bytes], dict[str, Any]] = {}

    def decode(self, metadata_type: type[ResourceMeta], data: bytes) -> ResourceMeta:
        """Decode ``data`` as ``metadata_type``; InvalidResourceMetaError when it cannot be."""
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
                if len(self._fields) >= self.size:
                    self._fields.clear()
                self._fields[key] = values
        return meta
