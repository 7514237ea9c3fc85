"""flyte_connection: run code as a Flyte 2 call whose Connection carries given secrets, for testing agents."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .._secrets import current_connection

__all__ = ["flyte_connection"]


@dataclass(frozen=True)
class _Connection:
    secrets: Mapping[str, str] = field(default_factory=dict)
    configs: Mapping[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def flyte_connection(
    secrets: Mapping[str, str] | None = None, configs: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Inside the block, ``get_secret`` sees ``secrets`` first, as in a Flyte 2 call carrying them.

    Example:
        ```python
        with flyte_connection({"databricks-token": "tenant-a-token"}):
            resource = await agent.get(resource_meta=meta)
        ```

    Args:
        secrets: connection key -> secret value, as the Flyte 2 backend fills them in.
        configs: connection key -> plain setting.
    """
    token = current_connection.set(_Connection(dict(secrets or {}), dict(configs or {})))
    try:
        yield
    finally:
        current_connection.reset(token)
