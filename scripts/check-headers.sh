#!/usr/bin/env bash
# Every public header in core/ and the programs must compile on its own: a header that leans
# on an include its user happened to make first breaks the next user.
set -euo pipefail
cc=${1:-cc}
build=${2:-build}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
bad=0
for h in core/*.h vault/*.h agent/*.h restore/*.h; do
    [ -e "$h" ] || continue
    case "$h" in *_int.h) continue ;; esac
    echo "#include \"$(basename "$h")\"" > "$tmp/t.c"
    if ! "$cc" -std=c17 -Wall -Wextra -Werror -fsyntax-only \
        -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
        -Icore -I"$(dirname "$h")" -I"$build/proto" "$tmp/t.c" 2> "$tmp/err"; then
        echo "check-headers: $h does not compile alone:"
        cat "$tmp/err"
        bad=1
    fi
    n=$((n + 1))
done
[ "$bad" -eq 0 ] && echo "check-headers: $n headers compile alone"
exit "$bad"
