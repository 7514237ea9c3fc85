#!/usr/bin/env bash
# Build or serve the documentation site (mkdocs, installed into .venv by scripts/bootstrap.sh):
#   bash scripts/docs.sh build [mkdocs options]   the static site in site/, warnings as errors
#   bash scripts/docs.sh serve [mkdocs options]   http://127.0.0.1:8001, rebuilt on every change
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/mkdocs ]; then
    echo "docs: mkdocs is not in .venv; run: bash scripts/bootstrap.sh" >&2
    exit 1
fi
# mkdocs-material prints a banner about its end of life (2027) on every run; the build is unaffected.
export NO_MKDOCS_2_WARNING=1
command=${1:-build}
shift || true
case "$command" in
    build) exec .venv/bin/mkdocs build --strict "$@" ;;
    serve) exec .venv/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8001 "$@" ;;
    *) echo "usage: bash scripts/docs.sh build|serve [mkdocs options]" >&2; exit 2 ;;
esac
