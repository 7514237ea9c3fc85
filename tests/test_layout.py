"""The package's shape: plugins use only public core names, the core has no import cycle,
and ``import flyteagents`` stays free of S3 and plugin client libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "flyteagents"
PLUGIN_SOURCES = sorted(
    [*ROOT.glob("plugins/*/src/**/*.py"), *ROOT.glob("examples/plugin/src/**/*.py")],
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, here: str | None = None) -> list[tuple[str, list[str]]]:
    """Every import in a file, top-level or inside a function: (absolute module, imported names)."""
    here = here or _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            module = node.module or ""
            if node.level:
                module = f"{base}.{module}" if module else base
            found.append((module, [alias.name for alias in node.names]))
    return found


def _core_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in CORE.rglob("*.py")}


def test_the_scan_sees_the_plugins_and_their_core_imports() -> None:
    plugins = {p.name for p in ROOT.glob("plugins/*") if (p / "pyproject.toml").exists()}
    scanned = {path.relative_to(ROOT).parts[1] for path in PLUGIN_SOURCES}
    assert plugins and plugins | {"plugin"} == scanned  # every plugin under plugins/, and examples/plugin
    imported = {m for path in PLUGIN_SOURCES for m, _ in _imports(path)}
    assert {"flyteagents", "flyteagents.plugin", "flyteagents.sensor"} <= imported


def _private_core_imports(path: Path, here: str | None = None) -> list[str]:
    """The private core modules and names a file imports (``flyteagents._x``, ``from flyteagents import _y``)."""
    private = []
    for module, names in _imports(path, here):
        if module.split(".")[0] != "flyteagents":
            continue
        if any(part.startswith("_") for part in module.split(".")[1:]):
            private.append(module)
        private.extend(f"{module}.{name}" for name in names if name.startswith("_"))
    return private


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_public_core_modules(path: Path) -> None:
    private = _private_core_imports(path)
    assert private == [], f"{path.name} imports private core names; use flyteagents.plugin instead"


def test_a_private_name_from_a_public_module_is_seen(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from flyteagents.sensor import _engine\nfrom flyteagents.plugin import ClientPool\n")
    assert _private_core_imports(bad, "plugin.bad") == ["flyteagents.sensor._engine"]


def test_a_private_import_inside_a_function_is_seen(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import json\n\ndef f():\n    from flyteagents._secrets import check_secret_name\n")
    assert _imports(bad, "plugin.bad") == [("json", []), ("flyteagents._secrets", ["check_secret_name"])]


def test_the_core_has_no_import_cycle() -> None:
    modules = _core_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for module, names in _imports(path):
            if module not in modules:
                continue
            # "from pkg import name": the submodule pkg.name when there is one, else pkg itself.
            subs = {f"{module}.{n}" for n in names if f"{module}.{n}" in modules}
            if subs:
                edges |= subs
            if not names or len(subs) < len(names):
                edges.add(module)
        # A module needs its package's __init__ run first; that is not an import of its own.
        graph[name] = edges - {name, name.rpartition(".")[0]}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 30
    assert cycles == []


HEAVY = (
    *("botocore", "aiobotocore", "boto3", "s3fs"),  # S3
    *("aiokafka", "openai", "databricks", "google.cloud", "flyte"),  # plugins' clients, flyte-sdk
)


def test_import_flyteagents_loads_no_s3_or_plugin_client_library() -> None:
    # flytekit loads installed flytekitplugins-* packages when imported (its implicit plugins), so
    # what matters is what importing flyteagents adds on top of flytekit.
    script = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "import flytekit\n"
        "before = set(sys.modules)\n"
        "import flyteagents, flyteagents.plugin, flyteagents.sensor\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert "flyteagents.sensor._file" in out  # the file sensor is there, without its S3 signer
    heavy = [m for m in out if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []
    assert "flyteagents.sensor._s3" not in out
