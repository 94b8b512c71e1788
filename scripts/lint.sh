#!/usr/bin/env bash
# Static analysis: cppcheck and clang-tidy over the project's own C code.
# Needs a configured build directory (for compile_commands.json).
#   scripts/lint.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- \
    'core/*.c' 'agent/*.c' 'vault/*.c' 'restore/*.c' \
    | while read -r f; do [ -f "$f" ] && echo "$f"; done)
cppcheck --enable=warning,performance,portability --std=c11 \
    --error-exitcode=1 --inline-suppr --quiet \
    --suppress=missingIncludeSystem -I core -I "$build/proto" "${files[@]}"
status=0
out=$(clang-tidy -p "$build" --quiet "${files[@]}" 2>&1) || status=$?
grep -v -E '^([0-9]+ warnings? (and [0-9]+ errors? )?generated|Suppressed [0-9]+ warnings)' \
    <<<"$out" || true
if [ "$status" -ne 0 ]; then
    echo "lint: clang-tidy found problems"
    exit "$status"
fi
echo "lint: ${#files[@]} files clean"
