"""flyte-sdk's connector API on flyteagents: a ``flyte.connectors`` connector runs here with its imports changed.

Replace ``from flyte.connectors import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta``
with ``from flyteagents.connectors import ...``; the connector is then served to Flyte 2 (the
connector protocol) and to FlytePropeller 1.x (the agent protocol) by ``flyteagents serve``.
"""

from ._connectors import AsyncConnector, ConnectorRegistry
from ._models import Resource, ResourceMeta

__all__ = ["AsyncConnector", "ConnectorRegistry", "Resource", "ResourceMeta"]
