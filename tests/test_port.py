"""An agent written for flytekit's agent framework runs under flyteagents with only its imports changed."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SOURCE = Path(__file__).parent / "port" / "flytekit_bigquery_style_agent.py"
FLYTEKIT_IMPORT = "from flytekit.extend.backend.base_agent import"
FLYTEAGENTS_IMPORT = "from flyteagents import"


@pytest.mark.slow
def test_the_source_is_a_working_flytekit_agent(load_source: Callable[[str, str], ModuleType]) -> None:
    module = load_source(SOURCE.read_text(), "port_under_flytekit")
    assert module.wf(limit=3) == (3, "SELECT * FROM numbers LIMIT {{ .inputs.limit }}")
    assert "import flyteagents" not in SOURCE.read_text() and "from flyteagents" not in SOURCE.read_text()


def test_it_runs_under_flyteagents_with_only_its_imports_changed(load_source: Callable[[str, str], ModuleType]) -> None:
    original = SOURCE.read_text()
    assert FLYTEKIT_IMPORT in original
    ported = original.replace(FLYTEKIT_IMPORT, FLYTEAGENTS_IMPORT)
    changed = [
        line
        for line in difflib.unified_diff(original.splitlines(), ported.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed and all(line[1:].startswith(("from ", "import ")) for line in changed)

    module = load_source(ported, "port_under_flyteagents")
    import flyteagents

    assert isinstance(flyteagents.AgentRegistry.get_agent("warehouse_query"), module.WarehouseAgent)
    assert module.wf(limit=4) == (6, "SELECT * FROM numbers LIMIT {{ .inputs.limit }}")
    (job,) = module.JOBS.values()
    assert job["polls"] == 2
    assert "cancelled" not in job
