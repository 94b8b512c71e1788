#!/usr/bin/env bash
# The pipeline benchmark: coffer's agent data path (read -> chunk -> ID ->
# dedup -> zstd -3 -> seal) beside `zstd -3` and `b2sum` over the same bytes,
# on one core each, REPS repetitions interleaved, medians, as a table.
#
#   bench/run-pipeline.sh [BUILD_DIR]
#
# Environment (defaults in brackets):
#   CORPUS  corpus directory, generated when missing [/tmp/coffer-bench-corpus]
#   SIZE    corpus size for gen_corpus --size [800M]
#   SEED    gen_corpus --seed [1]
#   REPS    repetitions per contender [5]
#   WORK    scratch directory for the tar copy [/tmp/coffer-bench-work]
#
# Contenders (every one single-threaded; CPU = user + sys of the whole
# process tree, from /usr/bin/time; the table's ratios use CPU time because
# wall time on a shared machine also counts other processes):
#   pipeline            verification on, dedup on: the figure that counts
#   pipeline no-verify  verify-after-seal off (benchmarks only)
#   pipeline no-dedup   every chunk compressed and sealed, verification on
#   pipeline no-dedup no-verify
#   zstd -3 per file    find | xargs zstd -q -3 -T1 -c: one frame per file,
#                       each file read separately, as the pipeline does
#   zstd -3 tar         zstd -3 -T1 over a tar of the corpus (one stream)
#   b2sum per file      find | xargs b2sum
# The corpus is read once before timing, and the tar copy is made before
# timing, so the page cache is warm for all.
set -euo pipefail

build=${1:-build}
corpus=${CORPUS:-/tmp/coffer-bench-corpus}
size=${SIZE:-800M}
seed=${SEED:-1}
reps=${REPS:-5}
work=${WORK:-/tmp/coffer-bench-work}
gen=$build/bench/gen_corpus
pipe=$build/bench/pipeline

for tool in "$gen" "$pipe"; do
    if [ ! -x "$tool" ]; then
        echo "run-pipeline: $tool is not built" >&2
        exit 1
    fi
done
for tool in zstd b2sum tar /usr/bin/time; do
    command -v "$tool" >/dev/null || {
        echo "run-pipeline: $tool is missing" >&2
        exit 1
    }
done

if [ ! -d "$corpus" ]; then
    # About 100 mailboxes; 140 messages per mailbox on average makes the
    # size cap land near the end of the 18-month timeline.
    "$gen" --seed "$seed" --domains 4 --users 25 --messages-per-user 140 \
        --lists 6 --list-members 40 --size "$size" "$corpus"
fi
mkdir -p "$work"
tar cf "$work/corpus.tar" -C "$corpus" .
# Warm the page cache for every contender.
find "$corpus" -type f -print0 | xargs -0 cat >/dev/null
cat "$work/corpus.tar" >/dev/null

files=$(find "$corpus" -type f | wc -l)
bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
tarbytes=$(stat -c %s "$work/corpus.tar")

# run NAME CMD...: one timed repetition; appends "wall cpu" to $work/NAME.t
# and keeps the last stdout in $work/NAME.out.
run() {
    local name=$1
    shift
    /usr/bin/time -f "%e %U %S" -o "$work/$name.time" "$@" >"$work/$name.out"
    awk '{printf "%.3f %.3f\n", $1, $2 + $3}' "$work/$name.time" \
        >>"$work/$name.t"
}

names=(pipeline pipeline_noverify pipeline_nodedup pipeline_nodedup_noverify
    zstd_file zstd_tar b2sum)
for n in "${names[@]}"; do
    rm -f "$work/$n.t"
done

for ((r = 1; r <= reps; r++)); do
    echo "run-pipeline: repetition $r of $reps" >&2
    run pipeline "$pipe" "$corpus"
    run pipeline_noverify "$pipe" --no-verify "$corpus"
    run pipeline_nodedup "$pipe" --no-dedup "$corpus"
    run pipeline_nodedup_noverify "$pipe" --no-dedup --no-verify "$corpus"
    run zstd_file sh -c "find '$corpus' -type f -print0 |
        xargs -0 zstd -q -3 -T1 -c >/dev/null"
    run zstd_tar zstd -q -3 -T1 -c "$work/corpus.tar"
    run b2sum sh -c "find '$corpus' -type f -print0 | xargs -0 b2sum"
done
# One more pipeline run with per-stage CPU accounting.
"$pipe" --stages "$corpus" >"$work/stages.out"

# median FILE COLUMN
median() {
    cut -d' ' -f"$2" "$1" | sort -g |
        awk '{v[NR] = $1} END {
            if (NR % 2) print v[(NR + 1) / 2];
            else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
field() {
    tr ' ' '\n' <"$1" | sed -n "s/^$2=//p" | head -1
}

zcpu=$(median "$work/zstd_file.t" 2)
ztcpu=$(median "$work/zstd_tar.t" 2)
mb=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1e6}')

echo
echo "corpus: $corpus ($files files, $mb MB; tar $tarbytes bytes)"
echo "machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $(uname -sr)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), repetitions: $reps (medians)"
echo
printf '| %-30s | %8s | %8s | %11s | %9s | %9s |\n' contender "wall s" \
    "CPU s" "MB/s/core" "/zstd file" "/zstd tar"
printf '|%s|%s|%s|%s|%s|%s|\n' "--------------------------------" \
    "----------" "----------" "-------------" "-----------" "-----------"
for n in "${names[@]}"; do
    w=$(median "$work/$n.t" 1)
    c=$(median "$work/$n.t" 2)
    awk -v n="$n" -v w="$w" -v c="$c" -v b="$bytes" -v z="$zcpu" \
        -v zt="$ztcpu" 'BEGIN {
        printf "| %-30s | %8.2f | %8.2f | %11.1f | %9.2fx | %9.2fx |\n",
            n, w, c, b / 1e6 / c, c / z, c / zt }'
done
echo
for n in pipeline pipeline_nodedup; do
    o="$work/$n.out"
    echo "$n: chunks=$(field "$o" chunks) unique_bytes=$(field "$o" unique_bytes)" \
        "stored_bytes=$(field "$o" stored_bytes)" \
        "dedup_ratio=$(field "$o" dedup_ratio)" \
        "in-process cpu_s=$(field "$o" cpu_s)"
done
zout=$(zstd -q -3 -T1 -c "$work/corpus.tar" | wc -c)
echo "zstd -3 tar output bytes: $zout"
echo "stages (CPU s, one run): read=$(field "$work/stages.out" read_s)" \
    "mime=$(field "$work/stages.out" mime_s)" \
    "chunk=$(field "$work/stages.out" chunk_s)" \
    "id=$(field "$work/stages.out" id_s)" \
    "seal=$(field "$work/stages.out" seal_s)" \
    "total=$(field "$work/stages.out" cpu_s)"
