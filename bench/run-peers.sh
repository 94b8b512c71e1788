#!/usr/bin/env bash
# Coffer against restic and BorgBackup on the same mail corpus (issue 4).
#
#   bench/run-peers.sh [BUILD_DIR]
#
# Builds nothing: BUILD_DIR must hold coffer-agent, coffer-vault,
# coffer-admin, coffer-restore and bench/gen_corpus. restic and borg come
# from Debian (`scripts/deps.sh --bench`).
#
# Per repetition: a pristine copy of the corpus (generated once with
# bench/gen_corpus), then for every tool, interleaved and in a rotating
# order: a full backup into a fresh repository, a no-change backup; then
# one `gen_corpus --evolve HOURS` over the copy (deliveries, flag changes,
# new/ -> cur/ moves, deletions) and an incremental backup with every
# tool; then a full restore of the newest snapshot with every tool (issue
# 5), into a fresh directory, checked against the source afterwards. All
# tools see the same bytes, the same disk, all encrypt, and compress with
# zstd (level 3 where the tool lets one choose).
#
# Restore (phase "restore"): every mailbox of the corpus is backed up
# from this host, so coffer's row is one `coffer-restore restore --host`
# (RESTORE_MODE=host, the default; RESTORE_MODE=mailbox runs one process
# per mailbox, RESTORE_JOBS at a time, each opening the escrow key and the
# vault anew, as the first measurement did); restic runs `restic restore latest`, borg `borg
# extract` of the last archive. coffer-restore ends with syncfs(2), so the
# peers' commands end with `sync -f` on their target: every row includes
# making the restored tree durable. Before each restore the repository
# (and restic's and borg's caches) is evicted from the page cache like the
# source before a backup, and coffer's vault is restarted so its RocksDB
# block cache is cold too; the vault's CPU is in "vault CPU". read_bytes
# of the coffer row is coffer-restore's own (the vault reads the disk).
#
# Each run is measured for the whole process tree of the tool:
#   wall      seconds (/usr/bin/time)
#   cpu       user + system seconds
#   rss       peak RSS in KiB (/usr/bin/time %M: the largest process in
#             the tree; every tool here is one process)
#   read      read_bytes of /proc/<wrapper>/io after the tool was reaped
#             (the kernel adds a reaped child's I/O to its parent), i.e.
#             bytes that came from the block device. Before every run the
#             source tree is evicted from the page cache (fsync, then
#             posix_fadvise DONTNEED per file), so source reads are
#             counted; repository and cache files the tool just wrote stay
#             cached and mostly do not count.
#   rchar     bytes returned by read(2) of any file (source, repository,
#             cache, /proc): an upper bound, printed beside.
#   stored    du --apparent-size of the repository after the run (for
#             coffer: the vault's data directory, RocksDB WAL included,
#             which overstates: obsolete WAL files linger after a flush)
#   logical   for coffer the vault's coffer_vault_tenant_object_bytes
#             (stats file, after the run); for the others = stored.
#   vault CPU for coffer, the vault's CPU seconds during the run (it runs
#             on the same cores; not included in "cpu").
#
# Environment (defaults in brackets):
#   WORK       scratch directory on the disk to measure
#              [/var/tmp/coffer-peers-bench]
#   REPS       repetitions [3]
#   TOOLS      which tools, in the order of the first repetition
#              ["coffer restic borg"]
#   DOMAINS USERS MSGS SIZE SEED   gen_corpus options (USERS per domain)
#              [4 10 450 1G 1]: 40 mailboxes, ~1 GB
#   HOURS      --evolve hours for the incremental [24]
#   AGENT_WORKERS  coffer-agent workers [0 = cores]
#   RESTORE_MODE      coffer-restore per "host" (one process, --host) or
#                     per "mailbox" (one process each) [host]
#   RESTORE_JOBS      coffer-restore processes at once, mode mailbox [1]
#   RESTORE_PARALLELISM  coffer-restore's parallelism setting [4]
#   PHASES     "backup restore", or "backup" alone (restore needs the
#              backups of the same repetition) [backup restore]
#   PROFILE    1: after the repetitions, one more full backup of coffer
#              under `perf record -g` (agent only), top symbols; with
#              restore, one more coffer restore under perf (coffer-restore
#              and the vault) [0]
set -euo pipefail

build=${1:-build}
build=$(cd "$build" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/var/tmp/coffer-peers-bench}
reps=${REPS:-3}
tools=${TOOLS:-"coffer restic borg"}
domains=${DOMAINS:-4}
users=${USERS:-10}
msgs=${MSGS:-450}
size=${SIZE:-1G}
seed=${SEED:-1}
hours=${HOURS:-24}
agent_workers=${AGENT_WORKERS:-0}
profile=${PROFILE:-0}
restore_jobs=${RESTORE_JOBS:-1}
restore_mode=${RESTORE_MODE:-host}
restore_par=${RESTORE_PARALLELISM:-4}
phases=${PHASES:-"backup restore"}
[[ " $phases " == *" backup "* ]] ||
    { echo "run-peers: PHASES must include backup" >&2; exit 1; }
do_restore=0
[[ " $phases " != *" restore "* ]] || do_restore=1

agent=$build/agent/coffer-agent
vault=$build/vault/coffer-vault
admin=$build/vault/coffer-admin
gen=$build/bench/gen_corpus
restorer=$build/restore/coffer-restore
for t in "$agent" "$vault" "$admin" "$gen" "$restorer"; do
    [ -x "$t" ] || { echo "run-peers: $t is not built" >&2; exit 1; }
done
for t in restic borg /usr/bin/time python3; do
    command -v "$t" >/dev/null ||
        { echo "run-peers: $t missing (scripts/deps.sh --bench)" >&2; exit 1; }
done

mkdir -p "$work"
work=$(cd "$work" && pwd)
corpus=$work/corpus # pristine, never backed up
data=$work/src      # the copy every tool backs up
res=$work/results.tsv
log=$work/log
mkdir -p "$log"

# The pristine corpus, generated once per set of options. The mbox archives
# (OUTDIR/<domain>/<user>/mail/) are removed: coffer's agent is pointed at
# the Maildirs by mailbox_pattern, so every tool gets exactly the Maildirs.
stamp="$domains $users $msgs $size $seed"
if [ ! -f "$corpus/.stamp" ] || [ "$(cat "$corpus/.stamp")" != "$stamp" ]; then
    rm -rf "$corpus"
    echo "run-peers: generating the corpus ($stamp)" >&2
    "$gen" --seed "$seed" --domains "$domains" --users "$users" \
        --messages-per-user "$msgs" --size "$size" --quiet "$corpus" >&2
    rm -rf "$corpus"/*/*/mail
    echo "$stamp" >"$corpus/.stamp"
fi

# ---- measurement --------------------------------------------------------

# Drops the source tree from the page cache so source reads hit the disk.
evict() {
    sync
    python3 - "$1" <<'EOF'
import os, sys
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        try:
            fd = os.open(os.path.join(d, f), os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
EOF
}

# What measure evicts from the page cache before a run: the source for a
# backup (empty: $data), the repository and caches for a restore.
evict_dirs=()

# measure REP TOOL PHASE REPO CMD...: runs CMD under the probes, appends a
# row to results.tsv. The tool's stdout/stderr go to log/.
measure() {
    local rep=$1 tool=$2 phase=$3 repo=$4
    shift 4
    local base=$log/r$rep-$tool-$phase d
    if [ ${#evict_dirs[@]} -eq 0 ]; then
        evict "$data"
    fi
    for d in "${evict_dirs[@]}"; do
        [ ! -d "$d" ] || evict "$d"
    done
    local v0=0
    if [ "$tool" = coffer ]; then
        v0=$(vault_cpu)
    fi
    local rc=0
    # The inner script is single-quoted on purpose: $0/$$ are the inner
    # shell's, whose /proc/$$/io includes the reaped tool's I/O.
    # shellcheck disable=SC2016
    /usr/bin/time -f '%e %U %S %M' -o "$base.time" \
        bash -c '"$@" >"$0.out" 2>"$0.err"; rc=$?; cat /proc/$$/io >"$0.io"; exit $rc' \
        "$base" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "run-peers: $tool $phase exited $rc; see $base.err" >&2
        tail -5 "$base.err" >&2
        exit 1
    fi
    local wall usr sys rss rb rc_
    read -r wall usr sys rss <"$base.time"
    rb=$(awk '$1 == "read_bytes:" { print $2 }' "$base.io")
    rc_=$(awk '$1 == "rchar:" { print $2 }' "$base.io")
    local stored logical
    stored=$(du -s --apparent-size --block-size=1 "$repo" | cut -f1)
    logical=$stored
    local vcpu=0
    if [ "$tool" = coffer ]; then
        logical=$(coffer_object_bytes)
        vcpu=$(awk -v a="$v0" -v b="$(vault_cpu)" -v hz="$(getconf CLK_TCK)" \
            'BEGIN { printf "%.2f", (b - a) / hz }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$tool" "$phase" \
        "$wall" "$(awk -v u="$usr" -v s="$sys" 'BEGIN { print u + s }')" \
        "$rss" "$rb" "$rc_" "$stored" "$logical" "$vcpu" >>"$res"
    echo "run-peers: rep $rep $tool $phase: ${wall}s rss ${rss}K" \
        "read $rb rchar $rc_ stored $stored ($logical)" >&2
}

# The vault's own count of the tenant's object bytes, from a stats file
# written after the run ended (RocksDB's directory also holds WAL files the
# flush already made obsolete, so du overstates what is kept).
coffer_object_bytes() {
    local f=$work/coffer/stats.prom t0
    t0=$(date +%s.%N)
    for _ in $(seq 1 100); do
        if [ -f "$f" ] && [ "$(stat -c %.9Y "$f")" \> "$t0" ]; then
            break
        fi
        sleep 0.05
    done
    awk '/^coffer_vault_tenant_object_bytes/ && /acme/ { print $2; f = 1 }
         END { if (!f) print "nan" }' "$f"
}

# The vault's CPU ticks so far (utime + stime): on a single host it shares
# the cores with the agent, so its cost is part of coffer's wall time.
vault_cpu() {
    if [ -n "$vpid" ] && [ -r "/proc/$vpid/stat" ]; then
        # Fields after the ")" of comm: utime and stime are the 12th, 13th.
        sed 's/^.*) //' "/proc/$vpid/stat" | awk '{ print $12 + $13 }'
    else
        echo 0
    fi
}

# ---- coffer: a local vault, the test PKI, a registered tenant -----------

vpid=
stop_vault() {
    if [ -n "$vpid" ] && kill -0 "$vpid" 2>/dev/null; then
        kill -TERM "$vpid"
        for _ in $(seq 1 300); do
            kill -0 "$vpid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$vpid" 2>/dev/null || true
    fi
    [ -z "$vpid" ] || wait "$vpid" 2>/dev/null || true
    vpid=
}
trap stop_vault EXIT

pki=$work/pki
rm -rf "$pki"
mkdir -p "$pki"
bash "$src/tests/pki/make-test-pki.sh" "$pki" >/dev/null

# Starts the vault on $work/coffer (its config written by coffer_setup);
# sets vpid and vport. Port 0: a restart gets a new port.
vport=
vault_start() {
    local d=$work/coffer
    rm -f "$d/port"
    "$vault" --config "$d/vault.conf" >>"$log/vault.log" 2>&1 &
    vpid=$!
    vport=
    for _ in $(seq 1 300); do
        if [ -s "$d/port" ]; then
            vport=$(cat "$d/port")
            break
        fi
        kill -0 "$vpid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$vport" ] || { echo "run-peers: vault did not start" >&2; exit 1; }
}

# coffer-restore's configuration and the per-mailbox driver, for the vault
# on vport. The mailboxes are those mailbox_pattern finds in $data.
coffer_restore_setup() {
    local d=$work/coffer m u
    cat >"$d/restore.conf" <<EOF
tenant = "acme";
key_file = "$d/escrow.key";
passphrase_file = "$d/escrow.pass";
vaults = [ "127.0.0.1:$vport" ];
tls = { ca = "$pki/ca.pem"; cert = "$pki/acme-restore.pem";
        key = "$pki/acme-restore.key"; server_name = "localhost"; };
parallelism = $restore_par;
log_level = "warn";
EOF
    : >"$d/mailboxes"
    for m in "$data"/*/*/Maildir; do
        [ -d "$m" ] || continue
        u=${m%/Maildir}
        echo "$(basename "$u")@$(basename "$(dirname "$u")")" >>"$d/mailboxes"
    done
    if [ "$restore_mode" = host ]; then
        # The agent names the host it backs up from (gethostname: no host
        # in agent.conf), so every mailbox of the corpus is under this
        # one: one process, one key derivation, one connection.
        cat >"$d/restore-all.sh" <<EOF
#!/usr/bin/env bash
# One coffer-restore for every mailbox of host $(hostname) into \$1/<mailbox>.
set -euo pipefail
exec "$restorer" --config "$d/restore.conf" restore --host "$(hostname)" \\
    --to "\$1"
EOF
    else
        cat >"$d/restore-all.sh" <<EOF
#!/usr/bin/env bash
# One coffer-restore per mailbox into \$1/<mailbox>, $restore_jobs at once.
set -euo pipefail
mkdir -p "\$1"
tr '\\n' '\\0' <"$d/mailboxes" | xargs -0 -P "$restore_jobs" -I{} \\
    "$restorer" --config "$d/restore.conf" restore --mailbox {} --to "\$1/{}"
EOF
    fi
    chmod +x "$d/restore-all.sh"
}

# Fresh vault data, agent key, state: a first backup for real.
coffer_setup() {
    local d=$work/coffer
    stop_vault
    rm -rf "$d"
    mkdir -p "$d"
    cat >"$d/vault.conf" <<EOF
listen = "127.0.0.1:0";
port_file = "$d/port";
data_dir = "$d/data";
region = "bench-1";
shutdown_grace = "2s";
stats = { file = "$d/stats.prom"; interval = "1s"; };
tls = { cert = "$pki/server.pem"; key = "$pki/server.key";
        client_ca = "$pki/clients-ca.pem"; };
EOF
    vault_start
    local port=$vport
    "$admin" tenant add acme --vault "127.0.0.1:$port" \
        --cert "$pki/operator.pem" --key "$pki/operator.key" \
        --ca-cert "$pki/ca.pem" --tls-name localhost >>"$log/admin.log" 2>&1
    # Fair settings: no nice/ionice handicap (the peers get none), the
    # mass-deletion guard off (a day's Trash cleanup is not an attack here).
    cat >"$d/agent.conf" <<EOF
tenant = "acme";
key_file = "$d/agent.key";
passphrase_file = "$d/agent.pass";
state_dir = "$d/state";
tmp_dir = "$d";
mailbox_pattern = "$data/%d/%n/Maildir";
vaults = ( { address = "127.0.0.1:$port"; name = "local";
             tls_name = "localhost"; region = "bench-1"; } );
# One loopback vault, as the peers get one target: one region on purpose.
allow_single_region = true;
tls = { ca = "$pki/ca.pem"; cert = "$pki/agent.pem"; key = "$pki/agent.key"; };
workers = $agent_workers;
cpu_nice = 0;
io_class = "keep";
mass_deletion = { percent = 100; min_files = 50; };
EOF
    (umask 077 && echo "bench escrow passphrase" >"$d/escrow.pass")
    "$agent" init --config "$d/agent.conf" --escrow "$d/escrow.key" \
        --escrow-passphrase-file "$d/escrow.pass" >>"$log/agent-init.log"
}

export RESTIC_PASSWORD="bench restic password"
export RESTIC_CACHE_DIR=$work/restic-cache
export BORG_PASSPHRASE="bench borg passphrase"
export BORG_BASE_DIR=$work/borg-base
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no

# setup TOOL: a fresh, empty, encrypted repository.
setup() {
    case $1 in
    coffer) coffer_setup ;;
    restic)
        rm -rf "$work/restic" "$RESTIC_CACHE_DIR"
        restic init --repository-version 2 -r "$work/restic" \
            >>"$log/restic-init.log" 2>&1
        ;;
    borg)
        rm -rf "$work/borg" "$BORG_BASE_DIR"
        borg init -e repokey-blake2 "$work/borg" >>"$log/borg-init.log" 2>&1
        ;;
    esac
}

# backup REP TOOL PHASE
n_archive=0
backup() {
    local rep=$1 tool=$2 phase=$3
    case $tool in
    coffer)
        measure "$rep" coffer "$phase" "$work/coffer/data" \
            "$agent" backup --config "$work/coffer/agent.conf" --json
        ;;
    restic)
        # restic 0.14: repository v2, zstd; "auto" is zstd's fastest
        # level-class (restic exposes no numeric level).
        (cd "$data" && measure "$rep" restic "$phase" "$work/restic" \
            restic -r "$work/restic" backup --compression auto --json \
            --host bench .)
        ;;
    borg)
        n_archive=$((n_archive + 1))
        (cd "$data" && measure "$rep" borg "$phase" "$work/borg" \
            borg create --compression zstd,3 --stats --json \
            "$work/borg::a$n_archive" .)
        ;;
    esac
}

# restore REP TOOL: a full restore of the newest snapshot into a fresh
# directory, the repository cold (header comment), then checked.
restore() {
    local rep=$1 tool=$2 out=$work/restored-$2
    rm -rf "$out"
    mkdir -p "$out"
    case $tool in
    coffer)
        # A restart empties the vault's block cache; new port, new config.
        stop_vault
        vault_start
        coffer_restore_setup
        evict_dirs=("$work/coffer/data")
        measure "$rep" coffer restore "$work/coffer/data" \
            "$work/coffer/restore-all.sh" "$out"
        ;;
    restic)
        evict_dirs=("$work/restic" "$RESTIC_CACHE_DIR")
        # shellcheck disable=SC2016
        measure "$rep" restic restore "$work/restic" \
            sh -c 'restic -r "$0" restore latest --target "$1" && sync -f "$1"' \
            "$work/restic" "$out"
        ;;
    borg)
        evict_dirs=("$work/borg" "$BORG_BASE_DIR")
        # shellcheck disable=SC2016
        (cd "$out" && measure "$rep" borg restore "$work/borg" \
            sh -c 'borg extract "$0" && sync -f .' "$work/borg::a$n_archive")
        ;;
    esac
    evict_dirs=()
    check_restore "$tool" "$out"
    rm -rf "$out"
}

# check_restore TOOL DIR: every message file (cur/, new/) of the source's
# Maildirs is in DIR with the same size, and no other message file is; the
# first 64 MB of messages are compared byte for byte. Each tool lays the
# tree out its own way: coffer DIR/<user>@<domain>/, restic and borg
# DIR/<domain>/<user>/Maildir/ (both were run from inside $data).
check_restore() {
    python3 - "$1" "$2" "$data" <<'EOF'
import filecmp, os, sys
tool, out, data = sys.argv[1:4]
def messages(root):
    m = {}
    for d, _, fs in os.walk(root):
        if os.path.basename(d) not in ("cur", "new"):
            continue
        for f in fs:
            p = os.path.join(d, f)
            m[os.path.relpath(p, root)] = p
    return m
src, got = {}, {}
for dom in sorted(os.listdir(data)):
    if not os.path.isdir(os.path.join(data, dom)):
        continue
    for user in sorted(os.listdir(os.path.join(data, dom))):
        md = os.path.join(data, dom, user, "Maildir")
        if not os.path.isdir(md):
            continue
        if tool == "coffer":
            r = os.path.join(out, user + "@" + dom)
        else:
            r = os.path.join(out, dom, user, "Maildir")
        for k, p in messages(md).items():
            src[(dom, user, k)] = p
        for k, p in messages(r).items():
            got[(dom, user, k)] = p
missing = [k for k in src if k not in got]
extra = [k for k in got if k not in src]
size = [k for k in src if k in got and
        os.path.getsize(src[k]) != os.path.getsize(got[k])]
budget, diff, compared = 64 << 20, [], 0
for k in sorted(src):
    if budget <= 0 or k not in got:
        break
    budget -= os.path.getsize(src[k])
    compared += 1
    if not filecmp.cmp(src[k], got[k], shallow=False):
        diff.append(k)
total = sum(os.path.getsize(p) for p in src.values())
print("run-peers: %s restore check: %d of %d messages (%d bytes), %d "
      "missing, %d extra, %d of another size, %d of %d compared differ"
      % (tool, len(got), len(src), total, len(missing), len(extra),
         len(size), len(diff), compared), file=sys.stderr)
sys.exit(1 if missing or extra or size or diff else 0)
EOF
}

# ---- the repetitions ----------------------------------------------------

: >"$res"
: >"$log/evolve.tsv"
read -r -a order <<<"$tools"
for ((r = 1; r <= reps; r++)); do
    # Rotate the order so no tool always runs first on a cold machine.
    rot=()
    for ((i = 0; i < ${#order[@]}; i++)); do
        rot+=("${order[$(((i + r - 1) % ${#order[@]}))]}")
    done
    echo "run-peers: repetition $r of $reps (${rot[*]})" >&2
    rm -rf "$data"
    cp -a "$corpus" "$data"
    rm -f "$data/.stamp"

    for t in "${rot[@]}"; do
        setup "$t"
        backup "$r" "$t" full
        backup "$r" "$t" nochange
        # Coffer's vault must stay up for the incremental; the others hold
        # no process. Stop the vault only when it is not needed again.
    done

    # One day of change, the same for every tool. New files are those whose
    # (inode, size, mtime) did not exist before: a Maildir rename or move
    # keeps all three, while a freed inode that evolve reuses for a new
    # delivery comes back with another size or mtime (inode alone missed
    # those, 17 messages in one run). A file rewritten in place (the
    # dovecot-uidlist) also counts, but outside cur/ and new/.
    find "$data" -type f -printf '%i:%s:%T@\n' | sort >"$log/r$r-before.keys"
    "$gen" --evolve "$hours" --seed "$seed" --quiet "$data" >&2
    find "$data" -type f -printf '%i:%s:%T@ %s %P\n' | sort -k1,1 >"$log/r$r-after.list"
    join -v 2 "$log/r$r-before.keys" "$log/r$r-after.list" >"$log/r$r-new.list"
    new_msg=$(awk '$3 ~ /\/(cur|new)\/[^\/]+$/ { s += $2; n++ }
        END { printf "%d %d\n", s, n }' "$log/r$r-new.list")
    new_all=$(awk '{ s += $2; n++ } END { printf "%d %d\n", s, n }' \
        "$log/r$r-new.list")
    echo -e "$r\tevolve\tnew\t$new_msg $new_all" >>"$log/evolve.tsv"
    echo "run-peers: evolve: new messages (bytes count) $new_msg," \
        "all new files $new_all" >&2

    for t in "${rot[@]}"; do
        if [ "$t" = coffer ] && [ -z "$vpid" ]; then
            echo "run-peers: the vault stopped" >&2
            exit 1
        fi
        backup "$r" "$t" incr
    done
    # The agent's own count of what it read, beside the kernel's.
    if [ -f "$log/r$r-coffer-incr.out" ]; then
        echo "run-peers: coffer incr, agent's totals.bytes_read:" \
            "$(grep -o '"bytes_read": *[0-9]*' "$log/r$r-coffer-incr.out" |
                grep -o '[0-9]*$')" >&2
    fi
    if [ "$do_restore" = 1 ]; then
        for t in "${rot[@]}"; do
            restore "$r" "$t"
        done
    fi
    stop_vault
done

# ---- the table ----------------------------------------------------------

# med TOOL PHASE COLUMN: the median over repetitions.
med() {
    awk -F'\t' -v t="$1" -v p="$2" -v c="$3" '$2 == t && $3 == p { print $c }' \
        "$res" | sort -g | awk '{ v[++n] = $1 }
        END { if (n == 0) { print "nan"; exit }
              print n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'
}
newmsg=$(awk -F'\t' '{ split($4, a, " "); print a[1] }' "$log/evolve.tsv" |
    sort -g | awk '{ v[++n] = $1 } END { print n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }')
srcbytes=$(du -s --apparent-size --block-size=1 "$corpus" | cut -f1)

echo
echo "corpus: $stamp, $(find "$corpus" -type f | wc -l) files, $srcbytes bytes" \
    "(du --apparent-size); evolve --evolve $hours: new message bytes (median)" \
    "$newmsg"
# The binaries may be older than the checkout: give both.
echo "coffer: checkout $(git -C "$src" rev-parse --short HEAD)$(git -C "$src" diff --quiet -- agent core vault || echo '+local changes')," \
    "coffer-agent built $(date -u -r "$agent" +%Y-%m-%dT%H:%MZ)," \
    "$(restic version | cut -d' ' -f1-2), $(borg --version)"
echo "machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $(uname -sr)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), repetitions: $reps (medians)"
echo
echo "| tool | phase | wall s | CPU s | vault CPU s | MB/s (wall) | peak RSS MiB | read_bytes MB | rchar MB | du MB | stored MB |"
echo "|------|-------|-------:|------:|------------:|------------:|-------------:|--------------:|---------:|------:|----------:|"
phase_list="full nochange incr"
[ "$do_restore" = 0 ] || phase_list="$phase_list restore"
for p in $phase_list; do
    for t in "${order[@]}"; do
        w=$(med "$t" "$p" 4)
        echo "| $t | $p | $w | $(med "$t" "$p" 5) | $(med "$t" "$p" 11) |" \
            "$(awk -v b="$srcbytes" -v w="$w" 'BEGIN { printf "%.1f", b / 1e6 / w }') |" \
            "$(awk -v k="$(med "$t" "$p" 6)" 'BEGIN { printf "%.0f", k / 1024 }') |" \
            "$(awk -v k="$(med "$t" "$p" 7)" 'BEGIN { printf "%.1f", k / 1e6 }') |" \
            "$(awk -v k="$(med "$t" "$p" 8)" 'BEGIN { printf "%.1f", k / 1e6 }') |" \
            "$(awk -v k="$(med "$t" "$p" 9)" 'BEGIN { printf "%.1f", k / 1e6 }') |" \
            "$(awk -v k="$(med "$t" "$p" 10)" 'BEGIN { printf "%.1f", k / 1e6 }') |"
    done
done

# Ratios for issue 4's targets (only when all three tools ran).
if [[ " $tools " == *" coffer "* && " $tools " == *" restic "* && " $tools " == *" borg "* ]]; then
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
    verdict() { awk -v v="$1" -v l="$2" -v op="$3" 'BEGIN {
        ok = op == "ge" ? v >= l : v <= l; print ok ? "MET" : "MISSED" }'; }
    echo
    echo "| target | measured | limit | verdict |"
    echo "|--------|---------:|------:|---------|"
    x=$(ratio "$(med restic full 4)" "$(med coffer full 4)")
    echo "| full backup throughput / restic's | ${x}x | >= 2.5x | $(verdict "$x" 2.5 ge) |"
    x=$(ratio "$(med coffer incr 7)" "$newmsg")
    echo "| incremental read_bytes / new message bytes | ${x}x | <= 1.1x | $(verdict "$x" 1.1 le) |"
    x=$(ratio "$(med coffer nochange 4)" "$(med restic nochange 4)")
    echo "| no-change wall / restic's | ${x}x | <= 0.5x | $(verdict "$x" 0.5 le) |"
    x=$(ratio "$(med coffer incr 4)" "$(med restic incr 4)")
    echo "| incremental wall / restic's | ${x}x | <= 0.5x | $(verdict "$x" 0.5 le) |"
    x=$(ratio "$(med coffer incr 10)" "$(med borg incr 10)")
    echo "| stored bytes (after incr, vault's count) / Borg's | ${x}x | <= 0.9x | $(verdict "$x" 0.9 le) |"
    x=$(ratio "$(med coffer incr 9)" "$(med borg incr 9)")
    echo "| stored bytes (after incr, du of the vault) / Borg's | ${x}x | <= 0.9x | $(verdict "$x" 0.9 le) |"
    rc_=0
    for p in full nochange incr; do
        m=$(med coffer "$p" 6)
        rc_=$(awk -v a="$m" -v b="$rc_" 'BEGIN { print (a > b) ? a : b }')
    done
    bm=0
    for p in full nochange incr; do
        m=$(med borg "$p" 6)
        bm=$(awk -v a="$m" -v b="$bm" 'BEGIN { print (a > b) ? a : b }')
    done
    x=$(ratio "$rc_" "$bm")
    echo "| agent peak RSS (max phase) / Borg's | ${x}x | <= 0.5x | $(verdict "$x" 0.5 le) |"
    if [ "$do_restore" = 1 ]; then
        x=$(ratio "$(med restic restore 4)" "$(med coffer restore 4)")
        echo "| full restore throughput / restic's (issue 5) | ${x}x | >= 2x | $(verdict "$x" 2 ge) |"
        x=$(ratio "$(med borg restore 4)" "$(med coffer restore 4)")
        echo "| full restore throughput / Borg's (issue 5, no target) | ${x}x | - | - |"
    fi
fi
echo
echo "raw rows: $res (rep tool phase wall cpu rss_kib read_bytes rchar du stored vault_cpu)"

if [ "$profile" = 1 ] && command -v perf >/dev/null; then
    echo "run-peers: profiling one coffer full backup" >&2
    rm -rf "$data"
    cp -a "$corpus" "$data"
    coffer_setup
    evict "$data"
    perf record -F 499 -g -o "$work/perf.data" -- "$agent" backup \
        --config "$work/coffer/agent.conf" --json >"$log/profile.out" \
        2>"$log/profile.err" || true
    stop_vault
    echo
    echo "coffer-agent, full backup (perf, self time, top 15):"
    perf report -i "$work/perf.data" --no-children -g none --sort dso,sym --stdio \
        2>/dev/null | grep -E '^ +[0-9]' | head -15 || true
    echo
    echo "by library:"
    perf report -i "$work/perf.data" --no-children -g none --sort dso --stdio \
        2>/dev/null | grep -E '^ +[0-9]' | head -10 || true
fi

if [ "$profile" = 1 ] && [ "$do_restore" = 1 ] && command -v perf >/dev/null; then
    # The data of the last profile (or repetition) is in the vault: restore
    # it once more, the whole system sampled (coffer-restore and the vault
    # share the cores), cold as in the measured rows.
    echo "run-peers: profiling one coffer restore" >&2
    if [ ! -d "$work/coffer/data" ]; then
        echo "run-peers: no coffer data to restore" >&2
    else
        out=$work/restored-profile
        rm -rf "$out"
        vault_start
        coffer_restore_setup
        evict "$work/coffer/data"
        perf record -F 499 -g -a -o "$work/perf-restore.data" -- \
            "$work/coffer/restore-all.sh" "$out" >"$log/profile-restore.out" \
            2>"$log/profile-restore.err" || true
        stop_vault
        rm -rf "$out"
        echo
        echo "coffer restore (perf -a, self time, top 20):"
        perf report -i "$work/perf-restore.data" --no-children -g none \
            --sort comm,dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' |
            head -20 || true
        echo
        echo "by process and library:"
        perf report -i "$work/perf-restore.data" --no-children -g none \
            --sort comm,dso --stdio 2>/dev/null | grep -E '^ +[0-9]' |
            head -12 || true
    fi
fi
