#!/usr/bin/env bash
# Create .venv (Python 3.10-3.13) and install flyteagents, every plugin (and the example plugin) and the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ]; then
    python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
fi
UV=$(command -v uv || echo "$HOME/.local/bin/uv")

if [ ! -x .venv/bin/python ]; then
    "$UV" venv --quiet --seed --python "${FLYTEAGENTS_PYTHON:-python3}" .venv
fi

args=(-e ".[dev]")
for plugin in plugins/*/ examples/plugin/; do
    [ -f "$plugin/pyproject.toml" ] && args+=(-e "${plugin%/}[test]")
done
"$UV" pip install --quiet --python .venv/bin/python "${args[@]}"
bash scripts/install_deploy_tools.sh
