#!/usr/bin/env bash
# All of tiermark's tests (ctest: unit, stress, smoke, integration, scripts) on a fresh machine:
# installs missing packages, builds the release preset, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh
ctest --preset release
