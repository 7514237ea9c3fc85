#!/bin/sh
# Build wheels for the agent service image: build-wheels OUT [PLUGIN ...] (run from the repository root).
# OUT/app gets the wheels of the core and of plugins/<PLUGIN> for each PLUGIN (names may also be
# comma-separated); OUT/deps gets wheels of everything they depend on. An unknown plugin is an error.
set -eu

if [ "$#" -lt 1 ]; then
    echo "usage: build-wheels OUT [PLUGIN ...]" >&2
    exit 2
fi
out=$1
shift
pip=${PIP:-python -m pip}

projects=.
for name in $(echo "$*" | tr ',' ' '); do
    if [ ! -f "plugins/$name/pyproject.toml" ]; then
        known=$(for dir in plugins/*/; do [ -f "$dir/pyproject.toml" ] && basename "$dir"; done | tr '\n' ' ')
        echo "build-wheels: unknown plugin '$name'; the plugins are: $known" >&2
        exit 1
    fi
    projects="$projects plugins/$name"
done

# shellcheck disable=SC2086 # $pip and $projects are word lists on purpose.
$pip wheel --no-deps --wheel-dir "$out/app" $projects
# Naming the local wheels as files makes pip use them for their names (flyteagents is required by every
# plugin) and take only the rest from the index.
# shellcheck disable=SC2086
$pip wheel --wheel-dir "$out/deps" "$out"/app/*.whl
