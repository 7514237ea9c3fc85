"""AgentRegistry: agents by task category, and plugins found through entry points."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from flyteidl.admin.agent_pb2 import Agent
from flyteidl.admin.agent_pb2 import TaskCategory as TaskCategoryProto

from ._agent import AgentBase
from ._exceptions import AgentNotFoundError, DuplicateAgentError, InvalidTaskError

__all__ = ["ENTRY_POINT_GROUP", "AgentRegistry", "import_object", "module_of"]

ENTRY_POINT_GROUP = "flyteagents.agents"

logger = logging.getLogger("flyteagents")

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _defaultable(Generic[_P, _R]):
    """A method that, called on the class, acts on the class's default instance.

    This keeps flytekit's ``AgentRegistry.register(MyAgent())`` working while servers
    and tests use registries of their own.
    """

    def __init__(self, fn: Callable[Concatenate[AgentRegistry, _P], _R]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: AgentRegistry | None, owner: type[AgentRegistry]) -> Callable[_P, _R]:
        return functools.partial(self.fn, obj if obj is not None else owner.default())


class AgentRegistry:
    """The agents a process serves, keyed by task category.

    ``AgentRegistry.register(agent)`` (called on the class) fills the process-wide default
    registry, as in flytekit; ``AgentRegistry()`` makes an independent one.

    Plugins are installed distributions that declare an entry point in the
    ``flyteagents.agents`` group, named after the task type and pointing at an agent class
    (built with no arguments) or instance::

        [project.entry-points."flyteagents.agents"]
        bigquery_query_job_task = "flyteagents_bigquery:BigQueryAgent"

    ``discover()`` records entry points as strings without importing them; an agent is
    imported the first time its task type is asked for, or by ``load_plugins()``.
    """

    _default: AgentRegistry | None = None
    _default_lock = threading.Lock()

    def __init__(self) -> None:
        self._agents: dict[tuple[str, int], AgentBase] = {}
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> AgentRegistry:
        """The process-wide registry that class-level calls use."""
        if cls._default is None:
            with cls._default_lock:
                if cls._default is None:
                    cls._default = cls()
        return cls._default

    @property
    def agents(self) -> Mapping[tuple[str, int], AgentBase]:
        """A read-only view of the loaded agents by (task type, version)."""
        return MappingProxyType(self._agents)

    @property
    def known(self) -> Mapping[str, str]:
        """A read-only view of discovered plugins: task type -> ``"module:attr"``."""
        return MappingProxyType(self._known)

    @_defaultable
    def register(self, agent: AgentBase, override: bool = False) -> None:
        """Serve ``agent``'s task category with it.

        Raises:
            DuplicateAgentError: another agent already serves that category and
                ``override`` is False. Registering the same agent again is a no-op.
            TypeError: ``agent`` is not an AgentBase instance.
        """
        if not isinstance(agent, AgentBase):
            raise TypeError(f"expected an AgentBase instance, got {agent!r}")
        cat = agent.task_category
        key = (cat.name, cat.version)
        with self._lock:
            current = self._agents.get(key)
            if current is not None and current is not agent and not override:
                raise DuplicateAgentError(
                    f"task category {cat} is already served by {type(current).__qualname__} "
                    f"({current.name!r}); pass override=True to replace it"
                )
            self._agents[key] = agent

    @_defaultable
    def get_agent(self, task_type: str, version: int = 0) -> AgentBase:
        """The agent serving ``task_type`` at ``version``.

        Raises:
            AgentNotFoundError: none is registered or installed; the message says which
                plugin to install when one is known, or which categories are served.
        """
        key = (task_type, version)
        agent = self._agents.get(key)
        if agent is not None:
            return agent
        if task_type in self._known:
            self._load(task_type, self._known[task_type])
            agent = self._agents.get(key)
            if agent is not None:
                return agent
        served = ", ".join(sorted(f"{n}_v{v}" for n, v in self._agents)) or "none"
        raise AgentNotFoundError(
            f"no agent for task type {task_type!r} version {version} (served: {served}); "
            f"install the plugin that provides it, e.g. pip install flyteagents-<name>"
        )

    @_defaultable
    def list_agents(self) -> list[Agent]:
        """The loaded agents as ``flyteidl.admin.Agent`` messages, one per agent name."""
        by_name: dict[str, Agent] = {}
        for (task_type, version), agent in sorted(self._agents.items()):
            msg = by_name.get(agent.name)
            if msg is None:
                msg = by_name[agent.name] = Agent(name=agent.name, is_sync=agent.is_sync)
            msg.supported_task_types.append(task_type)
            msg.supported_task_categories.append(TaskCategoryProto(name=task_type, version=version))
        return list(by_name.values())

    @_defaultable
    def get_agent_metadata(self, name: str) -> Agent:
        """The ``Agent`` message for the agent called ``name``.

        Raises:
            AgentNotFoundError: no loaded agent has that name.
        """
        for msg in self.list_agents():
            if msg.name == name:
                return msg
        raise AgentNotFoundError(f"no agent named {name!r}")

    @_defaultable
    def discover(self, group: str = ENTRY_POINT_GROUP) -> dict[str, str]:
        """Record the installed plugins' entry points without importing them.

        Returns:
            task type -> ``"module:attr"`` for every entry point found.
        """
        found = {ep.name: ep.value for ep in _entry_points(group)}
        with self._lock:
            self._known.update(found)
        return found

    @_defaultable
    def load_plugins(self, group: str = ENTRY_POINT_GROUP) -> dict[str, str]:
        """Discover and import every installed plugin, registering its agent.

        A plugin that fails to import or build is logged by name and skipped; the
        others still load.

        Returns:
            entry point name -> error message, for each plugin that failed.
        """
        failures: dict[str, str] = {}
        for name, value in self.discover(group).items():
            try:
                self._load(name, value)
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
                logger.error("plugin %r (%s) failed to load: %s", name, value, failures[name])
        return failures

    @_defaultable
    def clear(self) -> None:
        """Forget every agent and discovered plugin (for tests)."""
        with self._lock:
            self._agents.clear()
            self._known.clear()

    def _load(self, name: str, value: str) -> None:
        obj = _resolve(value)  # a plugin that fails to import keeps its own error (ModuleNotFoundError, ...)
        agent = obj() if isinstance(obj, type) else obj
        if not isinstance(agent, AgentBase):
            raise TypeError(f"entry point {name!r} = {value!r} is not an agent class or instance")
        with self._lock:
            self._known.pop(name, None)
        cat = agent.task_category
        existing = self._agents.get((cat.name, cat.version))
        # The same plugin loaded twice replaces itself; a different agent for the category is a conflict.
        self.register(agent, override=existing is not None and type(existing) is type(agent))


def _entry_points(group: str) -> list[EntryPoint]:
    return list(entry_points(group=group))


def import_object(path: str, what: str = "object") -> Any:
    """Import ``"module:Qual.Name"`` (or ``"module.Name"``, or a whole ``"module"`` with a colon and no name).

    The script running as ``__main__`` is found under its file name rather than run twice.

    Raises:
        InvalidTaskError: the module or attribute is missing; the message says it was ``what``.
    """
    try:
        return _resolve(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidTaskError(f"cannot import {what} {path!r}: {exc}") from None


def _resolve(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    obj: Any = _import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def module_of(obj: Any) -> str:
    """The module another process imports ``obj`` from; a script run as ``__main__`` goes by its file name."""
    module: str = obj.__module__
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if main_file:
            return os.path.splitext(os.path.basename(main_file))[0]
    return module


def _import_module(name: str) -> Any:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if name not in sys.modules and main_file and os.path.splitext(os.path.basename(main_file))[0] == name:
        return sys.modules["__main__"]
    return importlib.import_module(name)
