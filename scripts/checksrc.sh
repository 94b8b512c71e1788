#!/usr/bin/env bash
# Bans C calls with a safer form in reach (see docs/ARCHITECTURE.md) and
# keeps each foreign API in its one home:
#   sodium only in keys.c, env.c, id.c, secret.c; RocksDB only in kv*.c;
#   gRPC only in rpc*.c.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- \
    'core/*.[ch]' 'agent/*.[ch]' 'vault/*.[ch]' 'restore/*.[ch]' \
    | while read -r f; do [ -f "$f" ] && echo "$f"; done)
bad=0
report() {
    echo "checksrc: $1"
    bad=1
}
for f in "${files[@]}"; do
    # Strip comments and string literals crudely: enough for a ban list.
    body=$(sed -e 's://.*$::' -e 's:"[^"]*"::g' "$f")
    if hits=$(grep -nE '\b(strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol|atoll|rand|srand)\s*\(' <<<"$body"); then
        report "$f: banned call: $hits"
    fi
    base=$(basename "$f")
    case "$base" in
    keys.c | env.c | id.c | secret.c | keys.h | env.h | id.h | secret.h) ;;
    *)
        if grep -qE '#include\s*<sodium' "$f"; then
            report "$f: includes sodium outside keys/env/id/secret"
        fi
        ;;
    esac
    case "$base" in
    kv*.c) ;;
    *)
        if grep -qE '#include\s*<rocksdb' "$f"; then
            report "$f: includes RocksDB outside kv*.c"
        fi
        ;;
    esac
    case "$base" in
    rpc*.c | rpc*.h) ;;
    *)
        if grep -qE '#include\s*<grpc' "$f"; then
            report "$f: includes gRPC outside rpc*.c"
        fi
        ;;
    esac
done
[ "$bad" -eq 0 ] && echo "checksrc: ${#files[@]} files clean"
exit "$bad"
