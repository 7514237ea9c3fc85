#!/usr/bin/env bash
# Install everything, then run the whole test suite (core and plugins) with the lint and type checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
