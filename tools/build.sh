#!/usr/bin/env bash
# Installs what is missing, then configures and builds the release preset into build/release.
# In CI (CI=true) warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
extra=()
[ "${CI:-}" = "true" ] && extra+=(-DTIERMARK_WERROR=ON)
cmake --preset release "${extra[@]}" >/dev/null
cmake --build --preset release
