"""Helpers for testing agents against real local services."""

from ._moto import MotoServer

__all__ = ["MotoServer"]
