#!/usr/bin/env bash
# The test command: checks the layering of #include lines
# (scripts/check-layers.sh; an upward include fails the run before anything
# is built), installs dependencies, builds (twice: the second must do
# nothing), runs each fuzz target for a bounded time, the whole ctest
# suite, then the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/ (its summary
# is the last line).
#   FUZZ_SECONDS=N  seconds per fuzz target (default 30)
#   SLUICE_ASAN=0   skip the sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check-layers.sh
scripts/install-deps.sh
scripts/build.sh
# A second build with nothing changed must do nothing (a configure that
# changes the compile line would rebuild every target each time).
if ! again=$(scripts/build.sh 2>&1) || ! grep -q "ninja: no work to do" <<<"$again"; then
  echo "test: a second scripts/build.sh with no change did work:" >&2
  echo "$again" >&2
  exit 1
fi
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j2
if [[ ${SLUICE_ASAN:-1} != 0 ]]; then
  echo "test: the suite again under ASan+UBSan (build-asan/)" >&2
  BUILD_DIR=build-asan scripts/build.sh -DSLUICE_SANITIZE=ON
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j2
fi
