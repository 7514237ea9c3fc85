#!/usr/bin/env bash
# Install flyteagents (the core alone) into .venv, then run the example workflow (a custom async agent
# and a custom sync agent) locally.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/flyteagents ]; then
    echo "Installing flyteagents and its dependencies into .venv/ (first run only: about 150 MB, a minute or less)..."
fi
FLYTEAGENTS_VERBOSE="${FLYTEAGENTS_VERBOSE:-}" bash scripts/bootstrap.sh --core
echo "Running examples/custom_agent.py: a report job on a custom async agent, then a custom sync agent..."
FLYTEAGENTS_EXAMPLE_DURATION="${FLYTEAGENTS_EXAMPLE_DURATION:-2}" .venv/bin/python examples/custom_agent.py
