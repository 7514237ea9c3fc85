#!/usr/bin/env bash
# Build wheels of flyteagents and of every plugin into dist/ (or the directory given), with plain pip:
#   bash scripts/build_wheels.sh [OUT]
# Install them anywhere with pip, naming the core's wheel with the plugins' (see docs/getting-started.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
projects=(.)
for plugin in plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && projects+=("${plugin%/}")
done
echo "Building wheels of ${projects[*]} into $out/..."
"${PYTHON:-python3}" -m pip wheel --quiet --no-deps --wheel-dir "$out" "${projects[@]}"
ls "$out"/*.whl
