"""The getting-started page, followed command by command, in order, in a fresh copy of the repository.

A new user clones the repository and types what the page says. The test copies the files git
tracks (and new, unignored ones) into a temporary directory, so the page's `.venv/` is made there
from scratch by `bash scripts/demo.sh`, and an empty virtualenv made with the standard library's
venv stands for "an environment of your own" (plain pip, no uv). The service's ports 8000 and 9090
become free ports the system picks: a service a user left running must not answer the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flyteagents.testing._process import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "getting-started.md").read_text()
COMMANDS = [
    line.strip()
    for block in re.findall(r"^```bash\n(.*?)^```", PAGE, re.S | re.M)
    for line in block.splitlines()
    if line.strip()
]
WARNINGS = re.compile(r"\b\w*Warning\b")  # FutureWarning, DeprecationWarning, UserWarning, ...

pytestmark = pytest.mark.slow


def fresh_copy(destination: Path) -> Path:
    """The repository's files as a fresh clone has them: tracked and new unignored ones, no .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


class Reader:
    """Runs the page's commands as a user types them: one shell each, in the current directory."""

    def __init__(self, clone: Path, own_env: Path, ports: dict[str, str]) -> None:
        self.clone = clone
        self.cwd = clone
        self.ports = ports
        # `pip`, `python3` and the scripts' tools come from the user's own environment first.
        self.env = dict(os.environ, PATH=f"{own_env / 'bin'}{os.pathsep}{os.environ['PATH']}")
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "FLYTEAGENTS_ENDPOINT"):
            self.env.pop(name, None)
        self.done: list[str] = []

    def typed(self, command: str) -> str:
        """The command with the service's ports replaced by the test's free ones."""
        assert command in COMMANDS, f"not on the page as written: {command}"
        for port, free in self.ports.items():
            command = command.replace(port, free)
        return command

    def run(self, command: str, timeout: float = 600) -> str:
        self.done.append(command)
        if command.startswith("cd "):
            self.cwd = self.cwd / command[3:]
            return ""
        typed = self.typed(command)
        result = subprocess.run(
            ["bash", "-c", typed], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"{typed}\n{out}"
        if not command.startswith(("pip ", "bash scripts/build_wheels.sh")):  # pip's own notices aside
            assert not WARNINGS.search(out), f"{typed} printed a warning:\n{out}"
        return out

    def start(self, command: str) -> subprocess.Popen[str]:
        """A command the page runs in a terminal of its own (the service)."""
        self.done.append(command)
        return subprocess.Popen(
            ["bash", "-c", f"exec {self.typed(command)}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def wait_for_metrics(server: subprocess.Popen[str], port: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, server.communicate()[0]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            return
        except OSError:
            assert time.monotonic() < deadline, "the service never started"
            time.sleep(0.2)


def test_the_page_in_order(tmp_path: Path) -> None:
    clone = fresh_copy(tmp_path / "flyteagents")
    own_env = tmp_path / "own-env"
    subprocess.run([sys.executable, "-m", "venv", str(own_env)], check=True, timeout=300)
    grpc_port, metrics_port = str(free_port()), str(free_port())
    user = Reader(clone, own_env, {"8000": grpc_port, "9090": metrics_port})
    page = iter(COMMANDS)

    out = user.run(next(page))
    assert user.done == ["bash scripts/demo.sh"]
    assert out.startswith("Installing flyteagents and its dependencies into .venv/ (first run only")
    assert "count=6 greeting='hello flyte' squares=[0, 1, 4] summary={'n': 3, 'word': 'flyte'}" in out
    installed = subprocess.run(
        [str(clone / ".venv/bin/python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    assert "flyteagents==0.1.0" in installed
    assert "flytekitplugins" not in installed and "mkdocs" not in installed and "moto" not in installed

    # An environment of one's own: the core, then the core and a plugin from the clone, then from wheels.
    user.run(next(page))
    check = "import flyteagents, importlib.metadata as m; print(m.version('flyteagents'))"
    core = subprocess.run([str(own_env / "bin/python"), "-c", check], capture_output=True, text=True, timeout=120)
    assert core.stdout.strip() == "0.1.0" and not WARNINGS.search(core.stderr), core.stderr
    user.run(next(page))
    out = user.run(next(page))
    wheels = sorted(p.name for p in (clone / "dist").glob("*.whl"))
    plugins = sorted(p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml"))
    assert wheels == sorted(
        ["flyteagents-0.1.0-py3-none-any.whl"] + [f"flyteagents_{p}-0.1.0-py3-none-any.whl" for p in plugins]
    )
    user.run(next(page))
    assert user.done[1:] == [
        "pip install ./",
        "pip install ./ ./plugins/databricks",
        "bash scripts/build_wheels.sh",
        "pip install dist/flyteagents-0.1.0-py3-none-any.whl dist/flyteagents_databricks-0.1.0-py3-none-any.whl",
    ]
    check = "import flyteagents_databricks, flyteagents; print(flyteagents.AgentRegistry().discover()['databricks'])"
    found = subprocess.run([str(own_env / "bin/python"), "-c", check], capture_output=True, text=True, timeout=120)
    assert found.stdout.strip() == "flyteagents_databricks._agent:DatabricksAgent", found.stderr

    user.run(next(page))
    assert user.cwd == clone / "examples"
    out = user.run(next(page))
    assert "quickstart.file_landed: SUCCEEDED" in out
    assert "9 words, starting with 'agents'" in out
    words = len((clone / "README.md").read_text().split())
    out = user.run(next(page))
    assert f"{words} words, starting with '#'" in out

    server = user.start(next(page))
    try:
        wait_for_metrics(server, metrics_port)
        listed = user.run(next(page))
        assert "quickstart_summary" in listed and "sensor" in listed
        out = user.run(next(page))
        assert "9 words, starting with 'agents'" in out
        assert f"via agent service 127.0.0.1:{grpc_port}" in out
        metrics = user.run(next(page))
        assert 'code="OK",operation="do",task_type="quickstart_summary"} 1.0' in metrics
        assert 'code="OK",operation="create",task_type="sensor"} 1.0' in metrics
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)
    assert server.returncode == 0
    served = server.communicate()[0]
    assert not WARNINGS.search(served), served
    assert next(page, None) is None, "a command on the page is not exercised"
    assert user.done == COMMANDS


def install_commands() -> dict[str, list[str]]:
    """Every ``pip install`` line in the README, the plugin pages, the plugins' READMEs and the Flyte 2 page."""
    found: dict[str, list[str]] = {}
    pages = [
        ROOT / "README.md",
        ROOT / "docs/flyte2-sdk.md",
        *ROOT.glob("docs/plugins/*.md"),
        *ROOT.glob("plugins/*/README.md"),
    ]
    for page in sorted(pages):
        for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(), re.S | re.M):
            for line in block.splitlines():
                command = line.split("#")[0].strip()
                if command.startswith("pip install"):
                    found.setdefault(command, []).append(str(page.relative_to(ROOT)))
    return found


def test_every_install_command_in_the_docs_works_with_plain_pip(tmp_path: Path) -> None:
    commands = install_commands()
    plugins = sorted(p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml"))
    # Each plugin's page and README say how to install it.
    for plugin in plugins:
        pages = {page for command, where in commands.items() if command.endswith(f"plugins/{plugin}") for page in where}
        assert {f"docs/plugins/{plugin}.md"} <= pages, plugin
    clone = fresh_copy(tmp_path / "flyteagents")
    own_env = tmp_path / "own-env"
    subprocess.run([sys.executable, "-m", "venv", str(own_env)], check=True, timeout=300)
    env = dict(os.environ, PATH=f"{own_env / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command} ({', '.join(commands[command])}):\n{done.stdout}\n{done.stderr}"
    # Writing a plugin: install the example, then copy it out, install it with its test extra and run its
    # tests there, block by block as the page gives them (a copy has no repository config around it).
    plugin_page = (ROOT / "docs/writing-a-plugin.md").read_text()
    plugin_blocks = re.findall(r"^```bash\n(.*?)^```", plugin_page, re.S | re.M)
    assert any("pip install -e examples/plugin" in b for b in plugin_blocks)
    assert any("python -m pytest tests" in b for b in plugin_blocks)
    for block in plugin_blocks:
        done = subprocess.run(["bash", "-ec", block], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (
            f"{block} (docs/writing-a-plugin.md):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    assert re.search(r"\b\d+ passed", done.stdout) and "failed" not in done.stdout, done.stdout
    # Installed, each plugin is found by the core through its entry points, with no warning printed.
    check = "import json; from flyteagents import AgentRegistry; print(json.dumps(AgentRegistry().discover()))"
    found = subprocess.run([str(own_env / "bin/python"), "-c", check], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and not WARNINGS.search(found.stderr), found.stderr
    modules = {value.split(".")[0] for value in json.loads(found.stdout).values()}
    assert modules >= {"flyteagents", "flyteagents_bigquery", "flyteagents_databricks", "flyteagents_openai"}
    assert "flyteagents_example:ExampleJobAgent" in json.loads(found.stdout).values(), "writing-a-plugin.md's plugin"
    for plugin in plugins:
        imported = subprocess.run(
            [str(own_env / "bin/python"), "-c", f"import flyteagents_{plugin}"], capture_output=True, text=True
        )
        assert imported.returncode == 0, imported.stderr
    flyte2 = subprocess.run(
        [str(own_env / "bin/python"), "-c", "import flyteagents.flyte2, flyteagents_bigquery.flyte2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert flyte2.returncode == 0, flyte2.stderr
    help_text = subprocess.run([str(own_env / "bin/flyteagents"), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "serve" in help_text.stdout and not help_text.stderr
