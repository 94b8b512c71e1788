#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a short while,
# starting from its saved corpus. New interesting inputs go to a scratch
# directory, not the tree; a crash fails the run and leaves crash-* files.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${1:-60}
build=${FUZZ_BUILD_DIR:-build-fuzz}

bash scripts/deps.sh
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCOFFER_FUZZ=ON > /dev/null
cmake --build "$build" -j "$(nproc)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for fuzzer in "$build"/tests/*_fuzzer; do
    name=$(basename "$fuzzer" _fuzzer)
    mkdir -p "$work/$name"
    echo "fuzz: $name for ${seconds}s"
    if ! "$fuzzer" -max_total_time="$seconds" -max_len=65536 \
        -artifact_prefix="$build/crash-$name-" \
        "$work/$name" "tests/fuzz/corpus/$name" > "$work/$name.log" 2>&1; then
        echo "fuzz: $name FAILED"
        tail -50 "$work/$name.log"
        status=1
    else
        tail -1 "$work/$name.log"
    fi
done
exit "$status"
