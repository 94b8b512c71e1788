#!/usr/bin/env bash
# Replication benchmark (issue 6): how fast a vault pulls a tenant from a
# peer over a 100 ms link, and how long a replica takes to catch up after
# a partition.
#
#   bench/run-sync.sh [BUILD_DIR]
#
# Needs root (network namespaces). Builds nothing: BUILD_DIR must hold
# coffer-vault, coffer-admin, coffer-agent, coffer-restore and
# bench/gen_corpus. The namespaces, bridge, certificates, vault
# configurations and tenant registration come from
# tests/system/netns-lib.sh (the system tests' library); this script adds
# the slow link and the measurements.
#
# Topology: vault-a (region r1, 10.77.0.11) and vault-b (region r2,
# 10.77.0.12), each in its own namespace on the library's bridge, peers of
# each other (certificates coffer://vault/vault-a|b), sync.interval "0"
# (rounds only when asked: every timing starts at a known instant). The
# client namespace (agent, coffer-admin) reaches both over the bridge
# without delay. Vault-to-vault traffic does NOT use the bridge: a
# point-to-point link (one tun device in each vault namespace, host routes
# to the other vault) is carried by a user-space delay line (Python,
# below) that holds every packet RTT_MS/2 in each direction, so a round
# trip takes RTT_MS, and drops everything while "cut" (SIGUSR1; SIGUSR2
# heals). Why not netns-lib.sh's nl_netem/nl_cut (tc netem, or its
# linkem.py stand-in on kernels without sch_netem): those act on a host's
# whole bridge link, so the operator's status polls would cross the delay
# and could not reach vault-b during the cut; and a tun link with a 64 KiB
# MTU moves few enough packets that the Python relay is not the
# bottleneck (711 MB/s for one TCP stream with no delay, here). The
# script measures one plain TCP stream over the link first (the summary's
# "vault link" line) so the figures can be read against it.
#
# Per repetition (fresh vault data, fresh tenant key):
#   1. seed: a copy of the bench corpus (run-peers.sh's options and cache)
#      is backed up to vault-a only; then `coffer-admin replication sync
#      --tenant acme` on vault-b, and the clock runs until vault-b's
#      status shows it caught up: its own snapshot count equals
#      vault-a's and its line for peer vault-a has a successful round
#      that started after the trigger. Bytes are the `bytes_pulled` the
#      status reports (object bytes, as stored: sealed and compressed).
#   2. partition: the vault link is cut; one sync round of vault-b is
#      started and waited for until it has failed (as the periodic
#      rounds of a real partition would); meanwhile `gen_corpus --evolve
#      PART_HOURS` applies PART_HOURS hours of the corpus's change
#      (deliveries, flag changes, moves, deletions: the hourly share of
#      what run-peers.sh uses as "a day later" with 24) and the agent
#      backs it up to vault-a. Then the link heals, a round is triggered
#      at once, and the clock runs until vault-b caught up as in 1. With
#      periodic rounds add up to one sync.interval to this time.
#   3. check (not timed): both vaults list the same snapshot IDs
#      (coffer-restore snapshots from each vault alone).
# Medians over the repetitions are printed as a Markdown table.
#
# Environment (defaults in brackets):
#   WORK        scratch directory [/var/tmp/coffer-sync-bench]; the run's
#               files go to WORK/coffer-sync-bench.* (kept with KEEP=1 or
#               on failure); results.tsv, extra.tsv, summary.md in WORK
#   REPS        repetitions [3]
#   RTT_MS      round-trip time of the vault link [100]
#   LOSS        packet loss of the vault link, per direction, 0..1 [0]
#   CORPUS      an existing pristine corpus made by run-peers.sh (its
#               .stamp must match the options) instead of WORK/corpus
#   DOMAINS USERS MSGS SIZE SEED   gen_corpus options, as run-peers.sh
#               [4 10 450 1G 1]: 40 mailboxes, ~1 GB
#   PART_HOURS  hours of change made during the partition [1]
#   SYNC_TIMEOUT   vaults' sync.timeout [20s]
#   SLOW_START_AFTER_IDLE  0 or 1: net.ipv4.tcp_slow_start_after_idle in
#               both vault namespaces [unset: the kernel's default, 1]
#   CATCHUP_MAX    seconds allowed for one catch-up before failing [900]
#   KEEP        1: keep the run's files after a success [0]
set -euo pipefail

build=${1:-build}
build=$(cd "$build" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/var/tmp/coffer-sync-bench}
reps=${REPS:-3}
rtt_ms=${RTT_MS:-100}
loss=${LOSS:-0}
domains=${DOMAINS:-4}
users=${USERS:-10}
msgs=${MSGS:-450}
size=${SIZE:-1G}
seed=${SEED:-1}
part_hours=${PART_HOURS:-1}
catchup_max=${CATCHUP_MAX:-900}

export COFFER_VAULT_BIN=$build/vault/coffer-vault
export COFFER_ADMIN_BIN=$build/vault/coffer-admin
export COFFER_AGENT_BIN=$build/agent/coffer-agent
export COFFER_RESTORE_BIN=$build/restore/coffer-restore
export COFFER_GEN_CORPUS_BIN=$build/bench/gen_corpus
export COFFER_SOURCE_DIR=$src
export COFFER_SYSTEM_KEEP=${KEEP:-0}
for t in "$COFFER_VAULT_BIN" "$COFFER_ADMIN_BIN" "$COFFER_AGENT_BIN" \
    "$COFFER_RESTORE_BIN" "$COFFER_GEN_CORPUS_BIN"; do
    [ -x "$t" ] || { echo "run-sync: $t is not built" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "run-sync: python3 missing" >&2; exit 1; }

mkdir -p "$work"
work=$(cd "$work" && pwd)
res=$work/results.tsv

# The pristine corpus, as run-peers.sh makes it (same options, same
# .stamp, Maildirs only), so either script's copy serves the other.
stamp="$domains $users $msgs $size $seed"
corpus=${CORPUS:-$work/corpus}
if [ ! -f "$corpus/.stamp" ] || [ "$(cat "$corpus/.stamp")" != "$stamp" ]; then
    [ -z "${CORPUS:-}" ] ||
        { echo "run-sync: $CORPUS/.stamp is not \"$stamp\"" >&2; exit 1; }
    rm -rf "$corpus"
    echo "run-sync: generating the corpus ($stamp)" >&2
    "$COFFER_GEN_CORPUS_BIN" --seed "$seed" --domains "$domains" \
        --users "$users" --messages-per-user "$msgs" --size "$size" --quiet \
        "$corpus" >&2
    rm -rf "$corpus"/*/*/mail
    echo "$stamp" >"$corpus/.stamp"
fi

# netns-lib.sh keeps its run directory under TMPDIR: put it on the disk
# the corpus is on.
export TMPDIR=$work
# shellcheck source-path=SCRIPTDIR/.. source=tests/system/netns-lib.sh
source "$src/tests/system/netns-lib.sh"
nl_init sync-bench
nl_say "the vault link's delay and loss come from this script's delay line, with or without netem"
data=$NL_DIR/src # the copy that is backed up
log=$NL_DIR/logs

# ---- the slow link ------------------------------------------------------

# delayline.py NS_A NS_B ONE_WAY_MS LOSS READY_FILE: one tun device "dl0"
# in each namespace (created here, by setns(2); they vanish with this
# process); every IP packet read from one is written to the other
# ONE_WAY_MS later, in order, unless lost or cut. select(2) on both, a
# queue per direction; tun packets up to 64 KiB (MTU 65000) keep the
# packet rate low enough for Python.
cat >"$NL_DIR/delayline.py" <<'EOF'
import collections, ctypes, fcntl, os, random, select, signal, struct, sys, time

CLONE_NEWNET, TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x40000000, 0x400454CA, 1, 0x1000
libc = ctypes.CDLL(None, use_errno=True)


def tun_in(ns):
    nsfd = os.open("/run/netns/" + ns, os.O_RDONLY)
    if libc.setns(nsfd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns " + ns)
    os.close(nsfd)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"dl0", IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


ns_a, ns_b, one_way_ms, loss, ready = sys.argv[1:6]
delay, loss = float(one_way_ms) / 1000.0, float(loss)
fa, fb = tun_in(ns_a), tun_in(ns_b)
cut = [False]
signal.signal(signal.SIGUSR1, lambda *_: cut.__setitem__(0, True))
signal.signal(signal.SIGUSR2, lambda *_: cut.__setitem__(0, False))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
queue = {fa: collections.deque(), fb: collections.deque()}  # bound for fd
other = {fa: fb, fb: fa}
rng = random.Random(1)
open(ready, "w").close()
while True:
    now, due = time.monotonic(), None
    for fd, q in queue.items():
        while q and q[0][0] <= now:
            try:
                os.write(fd, q.popleft()[1])
            except OSError:
                pass  # the device's queue is full: a loss, as on a wire
        if q and (due is None or q[0][0] < due):
            due = q[0][0]
    wait = None if due is None else max(0.0, due - time.monotonic())
    try:
        ready_fds = select.select([fa, fb], [], [], wait)[0]
    except InterruptedError:
        continue
    t = time.monotonic()
    for fd in ready_fds:
        for _ in range(64):
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            if cut[0] or (loss > 0 and rng.random() < loss):
                continue
            queue[other[fd]].append((t + delay, pkt))
EOF

# link_up: starts the delay line between vault-a and vault-b and routes
# each vault's traffic to the other through it (host routes beat the
# bridge's /24).
link_up() {
    local ready=$NL_DIR/delayline.ready ns_a ns_b i
    ns_a=$(nl_ns vault-a)
    ns_b=$(nl_ns vault-b)
    rm -f "$ready"
    nl_spawn cl delayline "$log/delayline.log" python3 "$NL_DIR/delayline.py" \
        "$ns_a" "$ns_b" "$(awk -v r="$rtt_ms" 'BEGIN { print r / 2 }')" \
        "$loss" "$ready"
    for ((i = 0; i < 100; i++)); do
        [ -e "$ready" ] && break
        nl_alive delayline || nl_fail "the delay line did not start"
        sleep 0.1
    done
    [ -e "$ready" ] || nl_fail "the delay line did not start in 10 s"
    if [ -n "${SLOW_START_AFTER_IDLE:-}" ]; then
        ip netns exec "$ns_a" sysctl -qw \
            "net.ipv4.tcp_slow_start_after_idle=$SLOW_START_AFTER_IDLE"
        ip netns exec "$ns_b" sysctl -qw \
            "net.ipv4.tcp_slow_start_after_idle=$SLOW_START_AFTER_IDLE"
    fi
    ip -n "$ns_a" link set dl0 mtu 65000 up
    ip -n "$ns_b" link set dl0 mtu 65000 up
    ip -n "$ns_a" route add "${NL_IP[vault-b]}/32" dev dl0 src "${NL_IP[vault-a]}"
    ip -n "$ns_b" route add "${NL_IP[vault-a]}/32" dev dl0 src "${NL_IP[vault-b]}"
}
link_cut() { kill -USR1 "${NL_PID[delayline]}"; }
link_heal() { kill -USR2 "${NL_PID[delayline]}"; }

# link_probe: connect time and the throughput of one TCP stream (64 MiB)
# from vault-b to vault-a over the delay line; prints "RTT_MS MB/S".
link_probe() {
    cat >"$NL_DIR/probe.py" <<'EOF'
import socket, sys, time
if sys.argv[1] == "serve":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], 9999))
    s.listen(1)
    s.settimeout(30)
    c, _ = s.accept()
    while c.recv(1 << 20):
        pass
    c.sendall(b"k")
    sys.exit(0)
t0 = time.monotonic()
c = socket.create_connection((sys.argv[2], 9999), timeout=30)
t1 = time.monotonic()
buf, n = b"\0" * (1 << 20), 64
for _ in range(n):
    c.sendall(buf)
c.shutdown(socket.SHUT_WR)
c.recv(1)
t2 = time.monotonic()
print("%.1f %.1f" % ((t1 - t0) * 1000, n * (1 << 20) / 1e6 / (t2 - t1)))
EOF
    nl_exec vault-a python3 "$NL_DIR/probe.py" serve "${NL_IP[vault-a]}" &
    local spid=$!
    sleep 0.5
    nl_exec vault-b python3 "$NL_DIR/probe.py" send "${NL_IP[vault-a]}"
    wait "$spid"
}

# ---- status -------------------------------------------------------------

# status_json: `coffer-admin replication status --json` of both vaults
# (exit 10, "a replica is behind or a peer failed", is an answer too).
status_json() {
    local rc=0
    nl_exec cl "$COFFER_ADMIN_BIN" replication status --json --tenant acme \
        --connect "$NL_DIR/ops.conf" >"$log/status.json" \
        2>"$log/status.err" || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 10 ]
}

# status_fields: from log/status.json, "A_SNAPS B_SNAPS LAST_ATTEMPT
# LAST_OK BYTES OBJECTS SNAPSHOTS BEHIND ERRFLAG" of vault-b's view of
# peer vault-a (own lines for the snapshot counts).
status_fields() {
    python3 - "$log/status.json" "$(cl_addr vault-a)" "$(cl_addr vault-b)" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
own, peer = {}, None
for v in d["vaults"]:
    if not v.get("ok"):
        sys.exit(1)
    for l in v["sync"]:
        if l["tenant"] != "acme":
            continue
        if l["peer"] == "":
            own[v["vault"]] = l["snapshots"]
        elif v["vault"] == sys.argv[3] and l["peer"] == "vault-a":
            peer = l
if peer is None or len(own) != 2:
    sys.exit(1)
print(own[sys.argv[2]], own[sys.argv[3]], peer["last_attempt_ms"],
      peer["last_ok_ms"], peer["bytes_pulled"], peer["objects_pulled"],
      peer["snapshots_pulled"], peer["behind"], 1 if peer["last_error"] else 0)
EOF
}

# sync_b: starts a round of vault-b now.
sync_b() {
    nl_exec cl "$COFFER_ADMIN_BIN" replication sync --tenant acme \
        --vault "$(cl_addr vault-b)" --cert "$NL_DIR/certs/operator.pem" \
        --key "$NL_DIR/certs/operator.key" --ca-cert "$NL_DIR/ca/ca.pem" \
        >>"$log/sync-now.log" 2>&1 || nl_fail "replication sync on vault-b failed"
}

# wait_caught_up T0_MS: polls (every 0.1 s, at most CATCHUP_MAX s) until
# vault-b holds as many snapshots as vault-a and finished a round with
# vault-a that began at or after T0_MS; sets ST (the status fields) and
# T1_MS (when the status first showed it).
wait_caught_up() {
    local t0=$1 deadline a b att ok rest
    deadline=$(($(nl_now_ms) + catchup_max * 1000))
    while :; do
        if status_json && ST=$(status_fields); then
            read -r a b att ok rest <<<"$ST"
            if [ "$a" -gt 0 ] && [ "$a" = "$b" ] && [ "$att" -ge "$t0" ] &&
                [ "$ok" -ge "$att" ]; then
                T1_MS=$(nl_now_ms)
                return 0
            fi
        fi
        [ "$(nl_now_ms)" -lt "$deadline" ] ||
            nl_fail "vault-b did not catch up in $catchup_max s (status: ${ST:-none})"
        sleep 0.1
    done
}

# wait_failed T0_MS: until vault-b's round with vault-a that began at or
# after T0_MS has failed (the link is cut).
wait_failed() {
    local t0=$1 deadline att er
    deadline=$(($(nl_now_ms) + 120000))
    while :; do
        if status_json && ST=$(status_fields); then
            read -r _ _ att _ _ _ _ _ er <<<"$ST"
            if [ "$att" -ge "$t0" ] && [ "$er" = 1 ]; then
                return 0
            fi
        fi
        [ "$(nl_now_ms)" -lt "$deadline" ] ||
            nl_fail "vault-b's round during the cut did not fail in 120 s"
        sleep 0.2
    done
}

# sync_gets: SyncGet calls vault-a has served so far (its audit lines).
sync_gets() {
    grep -c 'method=/coffer.v1.Vault/SyncGet ' "$NL_DIR/vault-a/vault.log" || true
}

# cpu_ticks NAME: utime + stime of a spawned process so far.
cpu_ticks() {
    sed 's/^.*) //' "/proc/${NL_PID[$1]}/stat" | awk '{ print $12 + $13 }'
}

# ---- the cluster --------------------------------------------------------

# Read by cl_vault_config (netns-lib.sh).
export CL_SYNC_INTERVAL=0
export CL_SYNC_TIMEOUT=${SYNC_TIMEOUT:-20s}
cl_setup
cl_vault vault-a 10.77.0.11 r1
cl_vault vault-b 10.77.0.12 r2
cl_vault_config vault-a
cl_vault_config vault-b
cl_ops_conf >/dev/null
link_up
read -r probe_rtt probe_mbs <<<"$(link_probe)"
nl_say "vault link: connect ${probe_rtt} ms (one round trip), one TCP stream ${probe_mbs} MB/s"

# The agent backs up to vault-a alone, so its data reaches vault-b only by
# replication: a single-region agent on purpose (allow_single_region, when
# this build knows the setting; docs/AGENT.md).
single_region=""
a_region=""
if grep -q allow_single_region "$src/agent/config.c"; then
    single_region="allow_single_region = true;"
    a_region='region = "r1";'
fi
agent_setup() {
    local d=$NL_DIR/agent
    rm -rf "$d"
    mkdir -p "$d" "$NL_DIR/restore"
    cat >"$d/agent.conf" <<EOF
tenant = "acme";
key_file = "$d/view.key";
passphrase_file = "$d/view.pass";
state_dir = "$d/state";
tmp_dir = "$d";
mailbox_pattern = "$data/%d/%n/Maildir";
vaults = ( { address = "$(cl_addr vault-a)"; name = "vault-a"; $a_region } );
$single_region
tls = { ca = "$NL_DIR/ca/ca.pem"; cert = "$NL_DIR/certs/agent.pem";
        key = "$NL_DIR/certs/agent.key"; };
cpu_nice = 0;
io_class = "keep";
mass_deletion = { percent = 100; min_files = 50; };
EOF
    (umask 077 && echo "bench escrow passphrase" >"$NL_DIR/restore/escrow.pass")
    rm -f "$NL_DIR/restore/escrow.key"
    nl_exec cl "$COFFER_AGENT_BIN" init --config "$d/agent.conf" \
        --escrow "$NL_DIR/restore/escrow.key" \
        --escrow-passphrase-file "$NL_DIR/restore/escrow.pass" \
        >"$log/agent-init.log" 2>&1 || nl_fail "coffer-agent init failed"
}

# backup NAME: one agent run to vault-a; prints its wall seconds.
backup() {
    local t0 rc=0
    t0=$(nl_now_ms)
    nl_exec cl "$COFFER_AGENT_BIN" backup --config "$NL_DIR/agent/agent.conf" \
        --json >"$log/$1.json" 2>"$log/$1.log" || rc=$?
    [ "$rc" = 0 ] || nl_fail "backup $1 exited $rc (logs/$1.log)"
    awk -v a="$t0" -v b="$(nl_now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }'
}

# phase_row REP NAME T0_MS FIELDS_BEFORE CPU_A0 CPU_B0 GETS0: waits for
# the catch-up and appends a row: rep phase seconds bytes objects
# snapshots cpu_a cpu_b syncget_calls (the vaults' CPU seconds and
# vault-a's SyncGet calls since the *0 values).
phase_row() {
    local rep=$1 name=$2 t0=$3 before=$4 ca0=$5 cb0=$6 g0=$7
    wait_caught_up "$t0"
    local s b0 o0 n0 b1 o1 n1 secs hz
    read -r _ _ _ _ b0 o0 n0 _ _ <<<"$before"
    read -r _ _ _ _ b1 o1 n1 _ _ <<<"$ST"
    secs=$(awk -v a="$t0" -v b="$T1_MS" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
    hz=$(getconf CLK_TCK)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$name" "$secs" \
        $((b1 - b0)) $((o1 - o0)) $((n1 - n0)) \
        "$(awk -v a="$ca0" -v b="$(cpu_ticks vault-a)" -v h="$hz" 'BEGIN { printf "%.2f", (b - a) / h }')" \
        "$(awk -v a="$cb0" -v b="$(cpu_ticks vault-b)" -v h="$hz" 'BEGIN { printf "%.2f", (b - a) / h }')" \
        $(($(sync_gets) - g0)) >>"$res"
    s=$(tail -n 1 "$res")
    nl_say "rep $rep $name: ${secs}s, $((b1 - b0)) bytes, $((o1 - o0)) objects, $((n1 - n0)) snapshots (row: $s)"
}

: >"$res"
: >"$work/extra.tsv"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= reps; r++)); do
    nl_say "repetition $r of $reps"
    for v in vault-a vault-b; do
        if [ -n "${NL_PID[$v]:-}" ]; then
            cl_vault_stop "$v"
        fi
        rm -rf "${NL_DIR:?}/$v/data"
        cl_vault_start "$v"
    done
    # shellcheck disable=SC2119 # no arguments: any region
    cl_tenant_add
    rm -rf "$data"
    cp -a "$corpus" "$data"
    rm -f "$data/.stamp"
    agent_setup

    # 1. seed
    t_full=$(backup "r$r-full")
    nl_say "rep $r: full backup to vault-a ${t_full}s"
    if ! status_json || ! before=$(status_fields); then
        before="0 0 0 0 0 0 0 0 0" # no line for the peer before its first round
    fi
    ca0=$(cpu_ticks vault-a)
    cb0=$(cpu_ticks vault-b)
    g0=$(sync_gets)
    t0=$(nl_now_ms)
    sync_b
    phase_row "$r" seed "$t0" "$before" "$ca0" "$cb0" "$g0"

    # 2. partition
    link_cut
    t_cut=$(nl_now_ms)
    sync_b
    find "$data" -type f -printf '%i:%s:%T@\n' | sort >"$log/r$r-before.keys"
    "$COFFER_GEN_CORPUS_BIN" --evolve "$part_hours" --seed "$seed" --quiet \
        "$data" >&2
    find "$data" -type f -printf '%i:%s:%T@ %s %P\n' | sort -k1,1 >"$log/r$r-after.list"
    new=$(join -v 2 "$log/r$r-before.keys" "$log/r$r-after.list" |
        awk '$3 ~ /\/(cur|new)\/[^\/]+$/ { s += $2; n++ } END { printf "%d %d", s, n }')
    t_incr=$(backup "r$r-incr")
    wait_failed "$t_cut"
    nl_say "rep $r: cut off; evolve $part_hours h: new messages (bytes count) $new; incremental to vault-a ${t_incr}s; vault-b's round failed"
    printf '%s\t%s\t%s\t%s\n' "$r" "$t_full" "$t_incr" "$new" >>"$work/extra.tsv"
    if ! status_json || ! before=$(status_fields); then
        nl_fail "no status after the cut"
    fi
    ca0=$(cpu_ticks vault-a)
    cb0=$(cpu_ticks vault-b)
    g0=$(sync_gets)
    link_heal
    t0=$(nl_now_ms)
    sync_b
    phase_row "$r" catchup "$t0" "$before" "$ca0" "$cb0" "$g0"

    # 3. the same snapshot IDs on both (coffer-restore, each vault alone)
    ids_a=$(cl_snapshot_ids vault-a)
    ids_b=$(cl_snapshot_ids vault-b)
    if [ -z "$ids_a" ] || [ "$ids_a" != "$ids_b" ]; then
        nl_fail "rep $r: the vaults list different snapshots"
    fi
    nl_say "rep $r: both vaults list the same $(wc -l <<<"$ids_a") snapshots"
done

# ---- the table ----------------------------------------------------------

# med PHASE COLUMN: the median over repetitions.
med() {
    awk -F'\t' -v p="$1" -v c="$2" '$2 == p { print $c }' "$res" | sort -g |
        awk '{ v[++n] = $1 }
        END { if (n == 0) { print "nan"; exit }
              print n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'
}
medx() {
    awk -F'\t' -v c="$1" '{ split($c, a, " "); print a[1] }' "$work/extra.tsv" |
        sort -g | awk '{ v[++n] = $1 }
        END { print n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'
}
summary() {
    local srcbytes s b p
    srcbytes=$(du -s --apparent-size --block-size=1 "$corpus" | cut -f1)

    echo
    echo "corpus: $stamp, $(find "$corpus" -type f | wc -l) files, $srcbytes bytes;" \
        "partition: --evolve $part_hours, new message bytes (median) $(medx 4)"
    echo "vault link: round trip ${rtt_ms} ms (delay line), loss $loss; measured:" \
        "TCP connect ${probe_rtt} ms, one TCP stream ${probe_mbs} MB/s;" \
        "tcp_slow_start_after_idle ${SLOW_START_AFTER_IDLE:-default}"
    echo "coffer: checkout $(git -C "$src" rev-parse --short HEAD)$(git -C "$src" diff --quiet -- agent core vault || echo '+local changes')," \
        "coffer-vault built $(date -u -r "$COFFER_VAULT_BIN" +%Y-%m-%dT%H:%MZ)"
    echo "machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $(uname -sr)"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ), repetitions: $reps (medians);" \
        "full backup to vault-a $(medx 2) s, incremental $(medx 3) s;" \
        "load average at start $load0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| phase | seconds | bytes pulled | MB/s | objects | snapshots | SyncGet calls | vault-a CPU s | vault-b CPU s |"
    echo "|-------|--------:|-------------:|-----:|--------:|----------:|--------------:|--------------:|--------------:|"
    for p in seed catchup; do
        s=$(med "$p" 3)
        b=$(med "$p" 4)
        echo "| $p | $s | $b | $(awk -v b="$b" -v s="$s" 'BEGIN { printf "%.1f", b / 1e6 / s }') |" \
            "$(med "$p" 5) | $(med "$p" 6) | $(med "$p" 9) | $(med "$p" 7) | $(med "$p" 8) |"
    done
}
summary | tee "$work/summary.md"
echo
echo "raw rows: $res (rep phase seconds bytes objects snapshots cpu_a cpu_b syncget_calls);" \
    "$work/extra.tsv (rep full_s incr_s new_msg_bytes new_msgs)"
