#!/usr/bin/env bash
# The vault benchmark: a real coffer-vault on a data directory on disk,
# a throwaway test PKI (tests/pki/make-test-pki.sh), and bench/vault_bench
# driving it over mutual TLS on 127.0.0.1: upload throughput with 1 and
# CLIENTS concurrent clients, Missing latency for 4,096 IDs (idle, and
# while CLIENTS clients upload), vault RSS. REPS repetitions, each on a
# fresh vault and data directory; medians and [min-max] as a table.
#
#   bench/run-vault.sh [BUILD_DIR]
#
# Environment (defaults in brackets):
#   WORK       scratch directory; the vault's data lives here, so put it on
#              the disk to measure, never tmpfs [/var/tmp/coffer-vault-bench]
#   REPS       repetitions [3]
#   MIB        MiB of object data per upload phase [1024]
#   CLIENTS    concurrent clients [8]
#   QUERIES    Missing calls per latency phase [200]
#   LOAD_SECS  time limit of the latency phase under upload load [60]
#   AVG_KIB    chunker average (min /4, max x8) for object sizes [32]
#   BATCH_KIB  object data per PutObjects message [4096]
#   WORKERS    vault handler threads [4]
#   CACHE      vault cache_size [256M]
#   PROFILE    1: one more run of the upload phases under `perf record`
#              (vault process only), top functions printed [0]
set -euo pipefail

build=${1:-build}
src=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/var/tmp/coffer-vault-bench}
reps=${REPS:-3}
mib=${MIB:-1024}
clients=${CLIENTS:-8}
queries=${QUERIES:-200}
load_secs=${LOAD_SECS:-60}
avg=${AVG_KIB:-32}
batch=${BATCH_KIB:-4096}
workers=${WORKERS:-4}
cache=${CACHE:-256M}
profile=${PROFILE:-0}
vault=$build/vault/coffer-vault
bench=$build/bench/vault_bench

for tool in "$vault" "$bench"; do
    if [ ! -x "$tool" ]; then
        echo "run-vault: $tool is not built" >&2
        exit 1
    fi
done

mkdir -p "$work"
rm -rf "${work:?}/pki" "$work/data" "$work"/rep*.out "$work"/rep*.err
mkdir -p "$work/pki"
bash "$src/tests/pki/make-test-pki.sh" "$work/pki" >/dev/null

cat >"$work/vault.conf" <<EOF
listen = "127.0.0.1:0";
port_file = "$work/port";
data_dir = "$work/data";
region = "bench-1";
cache_size = "$cache";
workers = $workers;
shutdown_grace = "2s";
tls = { cert = "$work/pki/server.pem"; key = "$work/pki/server.key";
        client_ca = "$work/pki/clients-ca.pem"; };
EOF

vpid=
stop_vault() {
    if [ -n "$vpid" ] && kill -0 "$vpid" 2>/dev/null; then
        kill -TERM "$vpid"
        for _ in $(seq 1 300); do
            kill -0 "$vpid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$vpid" 2>/dev/null || true
        wait "$vpid" 2>/dev/null || true
    fi
    vpid=
}
trap stop_vault EXIT

# Starts a vault on an empty data directory; sets vpid and port.
start_vault() {
    rm -rf "$work/data" "$work/port"
    "$vault" --config "$work/vault.conf" >>"$work/vault.log" 2>&1 &
    vpid=$!
    port=
    for _ in $(seq 1 300); do
        if [ -s "$work/port" ]; then
            port=$(cat "$work/port")
            break
        fi
        kill -0 "$vpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "run-vault: the vault did not start; see $work/vault.log" >&2
        exit 1
    fi
}

run_bench() {
    "$bench" --target "127.0.0.1:$port" --pki "$work/pki" --pid "$vpid" \
        --mib "$mib" --clients "$clients" --queries "$queries" --load-secs "$load_secs" \
        --avg-kib "$avg" --batch-kib "$batch" "$@"
}

: >"$work/vault.log"
for ((r = 1; r <= reps; r++)); do
    echo "run-vault: repetition $r of $reps" >&2
    start_vault
    # gRPC's own log lines (client side) go to rep$r.err.
    if ! run_bench --seed "$r" >"$work/rep$r.out" 2>"$work/rep$r.err"; then
        grep -v 'rpc.grpc' "$work/rep$r.err" >&2 || true
        exit 1
    fi
    stop_vault
done

# stat PHASE KEY: "median [min-max]" over the repetitions.
stat() {
    cat "$work"/rep*.out | awk -v p="phase=$1" -v k="$2" '
        $1 == p { for (i = 2; i <= NF; i++) {
            split($i, kv, "="); if (kv[1] == k) print kv[2] } }' |
        sort -g | awk '{ v[++n] = $1 }
            END {
                if (n == 0) { print "-"; exit }
                m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
                printf "%g [%g-%g]\n", m, v[1], v[n] }'
}
kib2mib() {
    awk '{ split($2, r, /[][-]/)
           printf "%.0f [%.0f-%.0f]\n", $1 / 1024, r[2] / 1024, r[3] / 1024 }' \
        <<<"$1"
}

u=u$clients
m=m$clients
echo
echo "vault: $vault (workers $workers, cache_size $cache), data $work/data" \
    "on $(df --output=source,fstype "$work" | tail -1 | tr -s ' ')"
echo "machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $(uname -sr)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), repetitions: $reps (median [min-max])"
grep '^setup' "$work/rep1.out" | sed 's/^setup /objects: /'
echo
echo "| upload      | MB/s | objects/s | vault RSS peak MiB | steady MiB |"
echo "|-------------|-----:|----------:|-------------------:|-----------:|"
for ph in u1 "$u"; do
    echo "| $ph | $(stat "$ph" mb_s) | $(stat "$ph" obj_s) |" \
        "$(kib2mib "$(stat "$ph" rss_peak_kib)") |" \
        "$(kib2mib "$(stat "$ph" rss_steady_kib)") |"
done
echo
echo "| Missing, 4,096 IDs | queries | p50 ms | p90 ms | p99 ms | uploads MB/s | RSS peak MiB |"
echo "|--------------------|--------:|-------:|-------:|-------:|-------------:|-------------:|"
for ph in m0 "$m"; do
    echo "| $ph | $(stat "$ph" queries) | $(stat "$ph" p50_ms) |" \
        "$(stat "$ph" p90_ms) |" \
        "$(stat "$ph" p99_ms) | $(stat "$ph" upload_mb_s) |" \
        "$(kib2mib "$(stat "$ph" rss_peak_kib)") |"
done
echo
echo "VmHWM at the end (MiB): $(kib2mib "$(stat "$m" hwm_kib)")"
echo "already_present (should be 0): $(stat u1 already_present), $(stat "$u" already_present)"

if [ "$profile" = 1 ]; then
    echo "run-vault: profiling one upload run" >&2
    start_vault
    perf record -F 499 -g -p "$vpid" -o "$work/perf.data" 2>/dev/null &
    ppid=$!
    sleep 0.5
    run_bench --seed 99 --phases u1,uN >"$work/profile.out" \
        2>"$work/profile.err"
    kill -INT "$ppid"
    wait "$ppid" || true
    stop_vault
    echo
    echo "vault CPU, upload phases (perf, self time, top 12):"
    perf report -i "$work/perf.data" --no-children --sort dso,sym --stdio \
        2>/dev/null | grep -E '^ +[0-9]' | head -12
fi
