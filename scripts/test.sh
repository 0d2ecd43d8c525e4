#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs each fuzz target for
# a bounded time, then the whole ctest suite (its summary is the last line).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j2
