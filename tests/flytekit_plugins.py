"""flytekit's own plugins (the anchors we stay compatible with), installed beside the venv, never into it.

``import flytekit`` imports every installed ``flytekitplugins`` package: with flytekitplugins-bigquery
in the environment every command takes 4-5 s longer and prints google.api_core's FutureWarnings. So
the compatibility tests and the side-by-side benchmarks install the ones they need, without their
dependencies (the venv already has them), into a directory of their own under the venv, and put it
on ``sys.path`` (in this process) or ``PYTHONPATH`` (for a server they start).

    from flytekit_plugins import activate, install
    path = install("bigquery")        # <venv>/flytekit-plugins/bigquery-1.16.31
    activate("bigquery")              # the same, and importable here from now on
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def install(name: str) -> Path:
    """Install flytekitplugins-``name`` at the installed flytekit's version; return its directory.

    Idempotent: a directory already made for this flytekit version is reused.
    """
    version = importlib.metadata.version("flytekit")
    target = Path(sys.prefix) / "flytekit-plugins" / f"{name}-{version}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if Path(uv).is_file():
        command = [uv, "pip", "install", "--quiet", "--no-deps", "--python", sys.executable, "--target"]
    else:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    try:
        subprocess.run([*command, str(staging), f"flytekitplugins-{name}=={version}"], check=True, timeout=600)
        try:
            staging.rename(target)  # atomic: a concurrent run sees all of it or none
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def activate(name: str) -> Path:
    """Install flytekitplugins-``name`` (see :func:`install`) and make it importable in this process."""
    path = install(name)
    if str(path) not in sys.path:
        sys.path.append(str(path))
        importlib.invalidate_caches()
    return path


def pythonpath(*names: str) -> str:
    """A ``PYTHONPATH`` value holding flytekit's ``names`` plugins, for a process started from here."""
    return os.pathsep.join([*(str(install(name)) for name in names), *filter(None, [os.environ.get("PYTHONPATH")])])
