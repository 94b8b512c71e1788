#!/usr/bin/env bash
# The recovery test's cost (issue 5): times `coffer-restore verify` on the
# vault and corpus that bench/run-peers.sh leaves in WORK, sampled and in
# full, with the Dovecot pass and the live-store comparison on.
#
#   bench/run-verify.sh [BUILD_DIR]
#
# Environment (defaults in brackets):
#   WORK     run-peers.sh's scratch directory [/var/tmp/coffer-peers-bench]
#   REPS     repetitions of the sampled run [3]
#   SAMPLE_MAILBOXES SAMPLE_MESSAGES SEED   the sample [10 50 1]
#   FULL     also verify everything once [1]
#
# Prints one line per run (wall seconds, messages checked, bytes, the
# report's throughput) and the median of the sampled runs. The vault is
# restarted before every run so its block cache is cold, like the
# restore rows of run-peers.sh; the scratch directory is on WORK's disk.
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
work=${WORK:-/var/tmp/coffer-peers-bench}
reps=${REPS:-3}
sample_mb=${SAMPLE_MAILBOXES:-10}
sample_msg=${SAMPLE_MESSAGES:-50}
seed=${SEED:-1}
full=${FULL:-1}
d=$work/coffer
vault=$build/vault/coffer-vault
restore=$build/restore/coffer-restore

for f in "$vault" "$restore" "$d/vault.conf" "$d/restore.conf"; do
    [ -e "$f" ] || {
        echo "run-verify: $f missing (run bench/run-peers.sh first)" >&2
        exit 2
    }
done
command -v doveadm >/dev/null || echo "run-verify: no doveadm: the Dovecot pass is skipped" >&2

vpid=
stop_vault() {
    if [ -n "$vpid" ]; then
        kill "$vpid" 2>/dev/null || true
        wait "$vpid" 2>/dev/null || true
        vpid=
    fi
}
trap stop_vault EXIT

start_vault() {
    rm -f "$d/port"
    "$vault" --config "$d/vault.conf" >>"$work/verify-vault.log" 2>&1 &
    vpid=$!
    for _ in $(seq 1 300); do
        [ -s "$d/port" ] && break
        kill -0 "$vpid" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$d/port" ] || { echo "run-verify: vault did not start" >&2; exit 1; }
    # The vault listens on a new port after each start.
    sed -i "s/^vaults = .*/vaults = [ \"127.0.0.1:$(cat "$d/port")\" ];/" \
        "$d/restore.conf"
}

# One verify run: prints "label wall messages bytes throughput" and adds
# the line to $work/verify-lines.
run() {
    local label=$1 t0 t1 rc=0
    shift
    stop_vault
    start_vault
    rm -rf "$work/verify-scratch" "$work/verify-state.json"*
    mkdir -p "$work/verify-scratch"
    t0=$(date +%s.%N)
    "$restore" --config "$d/restore.conf" verify --scratch "$work/verify-scratch" \
        --state "$work/verify-state.json" --report "$work/verify-$label.json" \
        --live "$work/corpus/%d/%u/Maildir" "$@" >"$work/verify-$label.out" \
        2>"$work/verify-$label.err" || rc=$?
    t1=$(date +%s.%N)
    python3 - "$work/verify-$label.json" "$label" "$t0" "$t1" "$rc" \
        <<'PY' | tee -a "$work/verify-lines"
import json, sys
path, label, t0, t1, rc = sys.argv[1:]
r = json.load(open(path))
msgs = sum(m.get("messages_checked", 0) for rep in r["replicas"] for m in rep["mailboxes"])
nbytes = sum(m.get("bytes", 0) for rep in r["replicas"] for m in rep["mailboxes"])
tput = [rep.get("throughput_bytes_per_second", 0) for rep in r["replicas"]]
print(f"{label} wall={float(t1)-float(t0):.2f}s exit={rc} ok={r['ok']} "
      f"mailboxes={sum(len(rep['mailboxes']) for rep in r['replicas'])} "
      f"messages={msgs} bytes={nbytes} throughput={[round(t/1e6,1) for t in tput]}MB/s")
PY
}

# run() starts the vault: never in a subshell, or the EXIT trap would not
# know its pid.
: >"$work/verify-lines"
for i in $(seq 1 "$reps"); do
    run "sampled-$i" --sample-mailboxes "$sample_mb" \
        --sample-messages "$sample_msg" --seed "$seed"
done
grep '^sampled' "$work/verify-lines" | sed -n 's/.*wall=\([0-9.]*\)s.*/\1/p' | sort -n |
    awk '{a[NR]=$1} END {print "sampled median wall: " a[int((NR+1)/2)] " s"}'
if [ "$full" = 1 ]; then
    run full
fi
