"""The version of flyteagents."""

__version__ = "0.1.0"
