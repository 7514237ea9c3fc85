"""Decoding the resource_meta of a Get/Delete/Metrics/Logs request."""

from __future__ import annotations

from .._exceptions import InvalidResourceMetaError
from .._models import MAX_RESOURCE_META_BYTES, ResourceMeta

__all__ = ["decode_meta"]


def decode_meta(metadata_type: type[ResourceMeta], data: bytes) -> ResourceMeta:
    """Decode ``data`` as ``metadata_type``; InvalidResourceMetaError when it cannot be.

    resource_meta longer than MAX_RESOURCE_META_BYTES (what ResourceMeta.encode allows) is
    refused before it is decoded.
    """
    if len(data) > MAX_RESOURCE_META_BYTES:
        raise InvalidResourceMetaError(
            f"resource_meta is {len(data)} bytes, over the {MAX_RESOURCE_META_BYTES} byte limit"
        )
    try:
        return metadata_type.decode(data)
    except InvalidResourceMetaError:
        raise
    except Exception as exc:  # a metadata type with its own decode
        raise InvalidResourceMetaError(f"resource_meta cannot be decoded: {exc}") from exc
