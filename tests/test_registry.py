"""AgentRegistry: categories, duplicates, and plugins found through entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents import (
    AgentNotFoundError,
    AgentRegistry,
    AsyncAgentBase,
    DuplicateAgentError,
    Resource,
    ResourceMeta,
    SyncAgentBase,
)


class Echo(SyncAgentBase):
    name = "Echo"

    def __init__(self, task_type: str = "echo", version: int = 0) -> None:
        super().__init__(task_type_name=task_type, task_type_version=version)

    def do(self, task_template, output_prefix, inputs=None, **kwargs) -> Resource:  # type: ignore[no-untyped-def]
        return Resource(phase=TaskExecution.SUCCEEDED)


class Job(AsyncAgentBase):
    name = "Job"

    def __init__(self) -> None:
        super().__init__(task_type_name="job", metadata_type=ResourceMeta)


def test_register_and_get_by_category() -> None:
    registry = AgentRegistry()
    v0, v1 = Echo(), Echo(version=1)
    registry.register(v0)
    registry.register(v1)
    assert registry.get_agent("echo") is v0
    assert registry.get_agent("echo", 1) is v1


def test_second_agent_for_a_category_is_an_error() -> None:
    registry = AgentRegistry()
    registry.register(Echo())
    with pytest.raises(DuplicateAgentError, match=r"echo_v0 is already served by Echo \('Echo'\)"):
        registry.register(Echo())


def test_override_replaces_and_same_agent_is_a_no_op() -> None:
    registry = AgentRegistry()
    first, second = Echo(), Echo()
    registry.register(first)
    registry.register(first)
    registry.register(second, override=True)
    assert registry.get_agent("echo") is second


def test_unknown_task_type_names_it_and_what_is_served() -> None:
    registry = AgentRegistry()
    registry.register(Echo())
    with pytest.raises(AgentNotFoundError) as info:
        registry.get_agent("nope", 3)
    assert "no agent for task type 'nope' version 3 (served: echo_v0)" in str(info.value)
    assert "pip install flyteagents-" in str(info.value)


def test_list_agents_groups_by_name_with_categories_and_sync_flag() -> None:
    registry = AgentRegistry()
    registry.register(Echo("a"))
    registry.register(Echo("b", 2))
    registry.register(Job())
    agents = {a.name: a for a in registry.list_agents()}
    assert agents["Echo"].is_sync and not agents["Job"].is_sync
    assert list(agents["Echo"].supported_task_types) == ["a", "b"]
    assert [(c.name, c.version) for c in agents["Echo"].supported_task_categories] == [("a", 0), ("b", 2)]
    assert registry.get_agent_metadata("Job").supported_task_types == ["job"]
    with pytest.raises(AgentNotFoundError, match="no agent named 'Nope'"):
        registry.get_agent_metadata("Nope")


def test_class_level_calls_use_the_default_registry() -> None:
    agent = Echo("class_level_echo")
    AgentRegistry.register(agent)
    assert AgentRegistry.get_agent("class_level_echo") is agent
    assert AgentRegistry.default().get_agent("class_level_echo") is agent
    assert AgentRegistry().agents == {}


def test_views_are_read_only() -> None:
    registry = AgentRegistry()
    with pytest.raises(TypeError):
        registry.agents[("x", 0)] = Echo()  # type: ignore[index]


@pytest.fixture
def installed_plugins(tmp_path: Path) -> Iterator[Path]:
    """Two really installed distributions (dist-info on sys.path): one good, one broken."""
    (tmp_path / "fa_good_plugin.py").write_text(
        textwrap.dedent(
            """
            from flyteidl.core.execution_pb2 import TaskExecution
            from flyteagents import Resource, SyncAgentBase

            class GoodAgent(SyncAgentBase):
                name = "Good"
                def __init__(self):
                    super().__init__(task_type_name="good_task")
                def do(self, task_template, output_prefix, inputs=None, **kw):
                    return Resource(phase=TaskExecution.SUCCEEDED)
            """
        )
    )
    (tmp_path / "fa_broken_plugin.py").write_text("import a_vendor_sdk_that_is_not_installed\n")
    for dist, task_type, value in [
        ("fa_good", "good_task", "fa_good_plugin:GoodAgent"),
        ("fa_broken", "broken_task", "fa_broken_plugin:BrokenAgent"),
    ]:
        info = tmp_path / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[flyteagents.agents]\n{task_type} = {value}\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("fa_good_plugin", "fa_broken_plugin"):
            sys.modules.pop(name, None)


def test_discovery_imports_nothing(installed_plugins: Path) -> None:
    registry = AgentRegistry()
    found = registry.discover()
    assert found["good_task"] == "fa_good_plugin:GoodAgent"
    assert found["broken_task"] == "fa_broken_plugin:BrokenAgent"
    assert "fa_good_plugin" not in sys.modules
    assert registry.agents == {}


def test_a_known_plugin_is_imported_on_first_use(installed_plugins: Path) -> None:
    registry = AgentRegistry()
    registry.discover()
    agent = registry.get_agent("good_task")
    assert type(agent).__name__ == "GoodAgent"
    assert "fa_good_plugin" in sys.modules


def test_a_broken_plugin_is_reported_by_name_and_spares_the_others(
    installed_plugins: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = AgentRegistry()
    failures = registry.load_plugins()
    assert set(failures) == {"broken_task"}
    assert "ModuleNotFoundError" in failures["broken_task"]
    assert "a_vendor_sdk_that_is_not_installed" in failures["broken_task"]
    assert "plugin 'broken_task'" in caplog.text
    assert registry.get_agent("good_task").name == "Good"


def test_a_plugin_conflicting_with_a_registered_agent_is_reported(installed_plugins: Path) -> None:
    registry = AgentRegistry()
    registry.register(Echo("good_task"))
    failures = registry.load_plugins()
    assert "already served by Echo" in failures["good_task"]
    assert type(registry.get_agent("good_task")) is Echo
