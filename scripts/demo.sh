#!/usr/bin/env bash
# Install flyteagents, then run the example workflow (a custom async agent and a sync agent) locally.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
FLYTEAGENTS_EXAMPLE_DURATION="${FLYTEAGENTS_EXAMPLE_DURATION:-2}" .venv/bin/python examples/custom_agent.py
