#!/usr/bin/env bash
# The whole test suite, from a bare Debian machine: installs dependencies,
# configures, builds and runs ctest. This is the README's test command.
#
#   scripts/test.sh                  the default suite (about 20 minutes max)
#   BUILD_DIR=... scripts/test.sh    where to build (default: build)
#   COFFER_SANITIZE=1 scripts/test.sh  ASan+UBSan build of the same suite
#   CTEST_ARGS="-L unit" scripts/test.sh  pass arguments to ctest
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/deps.sh

build=${BUILD_DIR:-build}
cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${COFFER_SANITIZE:-0}" = 1 ]; then
    build=${BUILD_DIR:-build-asan}
    cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DCOFFER_SANITIZE=ON)
fi

cmake -S . -B "$build" "${cmake_args[@]}" > /dev/null
cmake --build "$build" -j "$(nproc)"
# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" ${CTEST_ARGS:-}
