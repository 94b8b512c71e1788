# shellcheck shell=bash
# netns-lib.sh - a small bash library for Coffer's system tests and
# benchmarks: network namespaces joined by a bridge, per-link delay and
# loss (tc netem, when the kernel has it), cutting a host off and healing
# it, processes run inside the namespaces, and the Coffer pieces on top
# (CA and certificates, vaults with peers, tenant registration, agent and
# restore configs, store dumps).
#
#   source tests/system/netns-lib.sh
#   nl_init converge          # root + netns check (exit 77), temp dir, trap
#   nl_bridge                 # the bridge namespace
#   nl_host a 10.77.0.11      # namespace NL_PREFIX-a, 10.77.0.11/24
#   nl_netem a "delay 50ms loss 1%"
#   nl_cut a; nl_heal a
#   nl_spawn a vault-a LOGFILE CMD...   # background, pid in NL_PID[vault-a]
#
# Naming: every namespace is "$NL_PREFIX-<host>" with NL_PREFIX=cfr<pid>,
# so parallel runs never collide; links live only inside those
# namespaces (nothing is added to the root namespace), and all traffic
# stays on the bridge. nl_cleanup (run by the EXIT trap nl_init sets)
# stops every process started with nl_spawn and deletes every namespace
# of this run, on success and failure alike.
#
# Environment the Coffer part reads (tests/CMakeLists.txt sets them):
#   COFFER_VAULT_BIN COFFER_ADMIN_BIN COFFER_AGENT_BIN COFFER_RESTORE_BIN
#   COFFER_GEN_CORPUS_BIN COFFER_STORE_DUMP_BIN COFFER_SOURCE_DIR
#   COFFER_SYSTEM_KEEP=1   keep the temp dir (always kept on failure)
#   COFFER_SYSTEM_NO_EMU=1 without netem, skip delay/loss instead of
#                          emulating them with linkem.py
#   CL_REPLICATION=0       vault configs without name/peers/sync (to run
#                          the harness against vaults without replication)
#
# Delay and loss: tc netem when the kernel has sch_netem (NL_NETEM=1);
# otherwise linkem.py relays the host's frames between two TAP devices
# with the same fixed delay and random loss (NL_EMU=1); otherwise none.
# nl_init prints which, loudly. linkem is a Python relay: fine for the
# tests' few MB, but a benchmark should report which one it ran on and
# not take linkem's throughput for the link's.
#
# Coffer cluster (after nl_init), typical order:
#   cl_cluster NAME LINKS [EXTRA [ARGS]]  all of nl_init .. cl_vault_start
#                                  below for the three-region tests
#   cl_setup                       bridge, host "cl", CA, operator/tenant certs
#   cl_vault vault-a 10.77.0.11 r1 host + vault certificate (per vault)
#   cl_vault_config vault-a [EXTRA]; cl_vault_start vault-a [ARGS]
#   cl_tenant_add --region r1 ...  registered on every vault (cl_ops_conf)
#   CL_MAILBOXES=("box=$(cl_maildir box 40)"); cl_agent_setup QUORUM VAULT...
#   cl_backup LOG; cl_snapshot_ids VAULT; cl_restore_conf NAME VAULT...
#   cl_sync_now; cl_wait_rounds TIMEOUT VAULT...; cl_stat VAULT METRIC_RE
#   cl_status_field VAULT PEER FIELD; cl_vault_stop VAULT [KILL]
#   cl_store_dump VAULT OUT; cl_damage_object VAULT ID (vault stopped)
#
# Conventions: functions starting nl_ are generic (namespaces, links,
# processes, waiting); cl_ functions build a Coffer cluster. Every wait is
# bounded (nl_wait_until); failures go through nl_fail, which prints the
# tails of every log registered with nl_log and exits 1.

NL_PREFIX=""
NL_DIR=""
NL_NAME=""
NL_NETEM=0 # 1 when tc netem works in a namespace
NL_EMU=0   # 1 when linkem.py stands in for it (see nl_probe_netem)
NL_T0=0
NL_FAILED=0
declare -a NL_HOSTS=()
declare -A NL_PID=()  # name -> pid of a process from nl_spawn
declare -A NL_NS=()   # name -> host it runs on (for callers)
declare -A NL_IP=()   # host -> address
declare -a NL_LOGS=() # logs whose tails nl_fail prints

nl_now_ms() { echo $(($(date +%s%N) / 1000000)); }

# nl_say TEXT...: a progress line with the seconds since nl_init.
nl_say() {
    local t=$(($(nl_now_ms) - NL_T0))
    printf '[%s %3d.%01ds] %s\n' "$NL_NAME" $((t / 1000)) $(((t % 1000) / 100)) \
        "$*"
}

# nl_skip REASON: exits 77, which ctest reports as skipped.
nl_skip() {
    printf '[%s] SKIP: %s\n' "${NL_NAME:-system}" "$*" >&2
    exit 77
}

# nl_log FILE: registers FILE so nl_fail shows its tail.
nl_log() {
    local f
    for f in "${NL_LOGS[@]}"; do
        [ "$f" != "$1" ] || return 0
    done
    NL_LOGS+=("$1")
}

nl_dump_logs() {
    local f
    for f in "${NL_LOGS[@]}"; do
        [ -f "$f" ] || continue
        printf '\n----- %s (last 25 lines) -----\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

# nl_fail TEXT...: reports, shows log tails and exits 1 (the trap cleans).
nl_fail() {
    printf '\n[%s] FAIL: %s\n' "$NL_NAME" "$*" >&2
    NL_FAILED=1
    nl_dump_logs
    exit 1
}

# nl_init NAME: checks we may make namespaces (else exit 77), makes the
# run's prefix and temp dir, probes netem and installs the cleanup trap.
nl_init() {
    NL_NAME=$1
    NL_T0=$(nl_now_ms)
    NL_PREFIX=cfr$$
    [ "$(id -u)" = 0 ] || nl_skip "needs root (network namespaces)"
    command -v ip >/dev/null || nl_skip "no ip(8) (iproute2)"
    if ! ip netns add "$NL_PREFIX-probe" 2>/dev/null; then
        nl_skip "ip netns add fails here (no CAP_SYS_ADMIN or no netns)"
    fi
    trap nl_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    NL_HOSTS+=(probe)
    NL_DIR=$(mktemp -d "${TMPDIR:-/tmp}/coffer-$NL_NAME.XXXXXX")
    chmod 700 "$NL_DIR"
    nl_probe_netem
    nl_say "prefix $NL_PREFIX, files in $NL_DIR"
}

# Whether netem loads. If not, links are emulated in user space by
# linkem.py (TAP devices, same delay and loss per direction: NL_EMU=1)
# when python3 and /dev/net/tun are there, else delay and loss are
# skipped; either way it says so loudly. COFFER_SYSTEM_NO_EMU=1: no
# emulation.
nl_probe_netem() {
    local ns=$NL_PREFIX-probe
    NL_NETEM=0
    NL_EMU=0
    if ip -n "$ns" link add nlp0 type veth peer name nlp1 2>/dev/null &&
        ip -n "$ns" link set nlp0 up 2>/dev/null &&
        ip netns exec "$ns" tc qdisc add dev nlp0 root netem delay 1ms \
            2>/dev/null; then
        NL_NETEM=1
    fi
    ip -n "$ns" link del nlp0 2>/dev/null || true
    [ "$NL_NETEM" = 0 ] || return 0
    if [ "${COFFER_SYSTEM_NO_EMU:-0}" != 1 ] && command -v python3 >/dev/null &&
        [ -c /dev/net/tun ]; then
        NL_EMU=1
    fi
    [ "${NL_NETEM_WARNED:-0}" = 0 ] || return 0
    NL_NETEM_WARNED=1
    {
        echo "######################################################"
        echo "# WARNING: tc netem is NOT available in this kernel"
        if [ "$NL_EMU" = 1 ]; then
            echo "# (sch_netem missing): link delay and loss are"
            echo "# EMULATED in user space by tests/system/linkem.py"
            echo "# (TAP devices; fixed delay, random loss per frame)."
        else
            echo "# (sch_netem missing): link DELAY and LOSS are SKIPPED."
            echo "# The test runs on an instant, lossless bridge; only"
            echo "# cut-off (link down) and heal are exercised."
        fi
        echo "######################################################"
    } >&2
}

# nl_bridge: the namespace $NL_PREFIX-br with bridge br0 (STP off, so a
# port forwards as soon as it is up).
nl_bridge() {
    local ns=$NL_PREFIX-br
    ip netns add "$ns" || nl_fail "ip netns add $ns"
    NL_HOSTS+=(br)
    ip -n "$ns" link set lo up
    ip -n "$ns" link add br0 type bridge stp_state 0 forward_delay 0 ||
        nl_fail "bridge in $ns"
    ip -n "$ns" link set br0 up
}

# nl_host HOST IP: namespace $NL_PREFIX-HOST with eth0 = IP/24, joined to
# the bridge through port p-HOST (in the bridge namespace).
nl_host() {
    local h=$1 addr=$2 ns=$NL_PREFIX-$1 br=$NL_PREFIX-br
    ip netns add "$ns" || nl_fail "ip netns add $ns"
    NL_HOSTS+=("$h")
    NL_IP[$h]=$addr
    ip -n "$br" link add "p-$h" type veth peer name eth0 netns "$ns" ||
        nl_fail "veth for $h"
    ip -n "$br" link set "p-$h" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
}

# nl_ns HOST: prints the namespace name of HOST.
nl_ns() { printf '%s-%s\n' "$NL_PREFIX" "$1"; }

# nl_exec HOST CMD...: runs CMD inside HOST's namespace (foreground).
nl_exec() {
    local h=$1
    shift
    ip netns exec "$NL_PREFIX-$h" "$@"
}

# nl_netem HOST "delay 50ms loss 1%": netem on both directions of HOST's
# link (its eth0 and its bridge port), so each direction gets the delay:
# the round trip is twice it. Without netem, linkem.py emulates the
# delay and loss (only those two settings) when NL_EMU=1: the first call
# replaces HOST's veth by TAP devices (its address is set again), so call
# it before starting processes there; later calls change it live.
# Without either it is a no-op, reported.
nl_netem() {
    local h=$1 spec=$2
    if [ "$NL_NETEM" = 1 ]; then
        # shellcheck disable=SC2086 # spec is a netem argument list
        ip netns exec "$NL_PREFIX-$h" tc qdisc replace dev eth0 root netem \
            $spec || nl_fail "netem on $h eth0"
        # shellcheck disable=SC2086
        ip netns exec "$NL_PREFIX-br" tc qdisc replace dev "p-$h" root netem \
            $spec || nl_fail "netem on bridge port of $h"
        return 0
    fi
    if [ "$NL_EMU" != 1 ]; then
        nl_say "netem unavailable: NOT applying \"$spec\" to $h"
        return 0
    fi
    local delay=0 loss=0 w prev=""
    for w in $spec; do
        case $prev in
        delay) delay=${w%ms} ;;
        loss) loss=${w%%%} ;;
        esac
        prev=$w
    done
    if ! [[ $delay =~ ^[0-9]+$ && $loss =~ ^[0-9.]+$ ]]; then
        nl_fail "linkem understands only \"delay Nms loss P%\", not \"$spec\""
    fi
    local params=$NL_DIR/linkem-$h.params ns=$NL_PREFIX-$h br=$NL_PREFIX-br
    echo "$delay $loss" >"$params"
    if nl_alive "linkem-$h"; then
        kill -HUP "${NL_PID[linkem-$h]}"
        nl_say "linkem on $h: delay ${delay}ms loss ${loss}% (changed)"
        return 0
    fi
    ip -n "$br" link del "p-$h" 2>/dev/null || true
    local log=$NL_DIR/linkem-$h.log
    : >"$log"
    nl_spawn br "linkem-$h" "$log" python3 \
        "$(dirname "${BASH_SOURCE[0]}")/linkem.py" "$params" "v-$h" "p-$h"
    nl_wait_until 10 "linkem for $h ready" grep -q '^ready' "$log"
    if ! { ip -n "$br" link set "v-$h" netns "$ns" &&
        ip -n "$ns" link set "v-$h" name eth0 &&
        ip -n "$ns" addr add "${NL_IP[$h]}/24" dev eth0 &&
        ip -n "$ns" link set eth0 up &&
        ip -n "$br" link set "p-$h" master br0 up; }; then
        nl_fail "linkem TAP devices for $h"
    fi
    nl_say "linkem on $h: delay ${delay}ms loss ${loss}% each way (user space)"
}

# nl_cut HOST: takes HOST's bridge port down: nothing reaches it or
# leaves it (its processes keep running). nl_heal HOST brings it back.
nl_cut() {
    ip -n "$NL_PREFIX-br" link set "p-$1" down || nl_fail "cut $1"
    nl_say "cut off $1"
}
nl_heal() {
    ip -n "$NL_PREFIX-br" link set "p-$1" up || nl_fail "heal $1"
    nl_say "healed $1"
}

# nl_spawn HOST NAME LOG CMD...: starts CMD in HOST's namespace in the
# background, output to LOG (registered for nl_fail); NL_PID[NAME] is its
# pid. pdeathsig: the kernel stops it if this shell dies without its trap.
nl_spawn() {
    local h=$1 name=$2 log=$3
    shift 3
    nl_log "$log"
    setpriv --pdeathsig KILL -- ip netns exec "$NL_PREFIX-$h" "$@" \
        >>"$log" 2>&1 &
    NL_PID[$name]=$!
    # shellcheck disable=SC2034 # for callers: which host runs a process
    NL_NS[$name]=$h
}

# nl_alive NAME: true while NAME's process runs (a zombie counts as gone).
nl_alive() {
    local pid=${NL_PID[$1]:-} st
    [ -n "$pid" ] || return 1
    st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# nl_stop NAME [SIGNAL] [TIMEOUT_S]: signals NAME (default TERM), waits
# for it to exit (default 20 s, then KILL); NL_RC is its exit status.
nl_stop() {
    local name=$1 sig=${2:-TERM} t=${3:-20} pid=${NL_PID[$1]:-} i
    NL_RC=""
    [ -n "$pid" ] || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do
        nl_alive "$name" || break
        sleep 0.1
    done
    if nl_alive "$name"; then
        nl_say "$name did not stop within $t s after SIG$sig: KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    NL_RC=0
    # (braces: bash's "Killed" job notice goes to /dev/null too)
    { wait "$pid"; } 2>/dev/null || NL_RC=$?
    unset "NL_PID[$name]"
}

# nl_wait_until TIMEOUT_S WHAT CMD...: polls CMD (every 0.2 s) until it
# succeeds; nl_fail naming WHAT after TIMEOUT_S seconds.
nl_wait_until() {
    local t=$1 what=$2 deadline
    shift 2
    deadline=$(($(nl_now_ms) + t * 1000))
    while ! "$@"; do
        [ "$(nl_now_ms)" -lt "$deadline" ] ||
            nl_fail "timed out after $t s waiting for: $what"
        sleep 0.2
    done
}

# nl_cleanup: the EXIT trap: stops spawned processes, deletes this run's
# namespaces (their links go with them), removes the temp dir on success.
nl_cleanup() {
    local rc=$? n h
    trap - EXIT
    for n in "${!NL_PID[@]}"; do
        kill -KILL "${NL_PID[$n]}" 2>/dev/null || true
    done
    for n in "${!NL_PID[@]}"; do
        wait "${NL_PID[$n]}" 2>/dev/null || true
    done
    for h in "${NL_HOSTS[@]}"; do
        ip netns del "$NL_PREFIX-$h" 2>/dev/null || true
    done
    if [ -n "$NL_DIR" ] && [ -d "$NL_DIR" ]; then
        if [ "$rc" = 0 ] && [ "${COFFER_SYSTEM_KEEP:-0}" != 1 ]; then
            rm -rf -- "$NL_DIR"
        else
            printf '[%s] files kept in %s\n' "$NL_NAME" "$NL_DIR" >&2
        fi
    fi
    if [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ "$NL_FAILED" = 0 ]; then
        printf '[%s] FAIL: exit %s\n' "$NL_NAME" "$rc" >&2
        nl_dump_logs
    fi
    exit "$rc"
}

# ============================================================================
# Coffer cluster
# ============================================================================
#
# Layout under $NL_DIR: ca/, certs/<stem>.{pem,key}, vault-X/{vault.conf,
# vault.log, data/, vault.prom}, ops.conf, agent/, restore/, logs/.
# Vaults listen on <ip>:7443 in their own namespaces; the client host
# ("cl") runs coffer-admin, coffer-agent and coffer-restore.

CL_PORT=7443
CL_TENANT=acme
declare -A CL_REGION=() # vault -> region
declare -a CL_VAULTS=()
CL_SYNC_INTERVAL=2s
CL_SYNC_BANDWIDTH=0
CL_SYNC_TIMEOUT=10s

cl_bins() {
    local b
    for b in COFFER_VAULT_BIN COFFER_ADMIN_BIN COFFER_AGENT_BIN \
        COFFER_RESTORE_BIN; do
        [ -x "${!b:-}" ] || nl_skip "$b not set or not executable"
    done
}

# cl_run LOG CMD...: runs CMD on the client host, output in logs/LOG.log;
# fails the test on a non-zero exit.
cl_run() {
    local log=$NL_DIR/logs/$1.log rc=0
    shift
    nl_exec cl "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        tail -n 30 "$log" >&2
        nl_fail "$(basename "$1") exited $rc (logs/$(basename "$log"))"
    fi
}

# cl_try LOG CMD...: as cl_run, but returns the exit code.
cl_try() {
    local log=$NL_DIR/logs/$1.log
    shift
    nl_exec cl "$@" >"$log" 2>&1
}

# cl_setup: bridge, the client host "cl" (10.77.0.100), logs/, CA,
# operator and tenant certificates (agent, restore, admin, admin2).
cl_setup() {
    cl_bins
    mkdir -p "$NL_DIR/logs" "$NL_DIR/certs"
    nl_bridge
    nl_host cl 10.77.0.100
    local A=$COFFER_ADMIN_BIN
    cl_run ca "$A" ca init --dir "$NL_DIR/ca" --name "system test CA" --days 30
    cl_run cert-op "$A" cert issue --ca "$NL_DIR/ca" --role operator \
        --name alice --days 5 --out "$NL_DIR/certs/operator"
    cl_run cert-agent "$A" cert issue --ca "$NL_DIR/ca" --role agent \
        --tenant "$CL_TENANT" --days 5 --out "$NL_DIR/certs/agent"
    cl_run cert-restore "$A" cert issue --ca "$NL_DIR/ca" --role restore \
        --tenant "$CL_TENANT" --days 5 --out "$NL_DIR/certs/restore"
    cl_run cert-admin "$A" cert issue --ca "$NL_DIR/ca" --role admin \
        --tenant "$CL_TENANT" --name admin1 --days 5 --out "$NL_DIR/certs/admin"
    cl_run cert-admin2 "$A" cert issue --ca "$NL_DIR/ca" --role admin \
        --tenant "$CL_TENANT" --name admin2 --days 5 \
        --out "$NL_DIR/certs/admin2"
}

# cl_vault NAME IP REGION: declares vault NAME (e.g. vault-a) on its own
# host (namespace NAME) and issues its certificate (coffer://vault/NAME).
cl_vault() {
    local v=$1 addr=$2 region=$3
    nl_host "$v" "$addr"
    CL_VAULTS+=("$v")
    CL_REGION[$v]=$region
    mkdir -p "$NL_DIR/$v"
    cl_run "cert-$v" "$COFFER_ADMIN_BIN" cert issue --ca "$NL_DIR/ca" \
        --role vault --name "$v" --ip "$addr" --dns localhost --days 5 \
        --out "$NL_DIR/certs/$v"
    nl_log "$NL_DIR/$v/vault.log"
}

# cl_cluster NAME LINKS [CONFIG_EXTRA [START_ARG...]]: the set-up the
# three-region tests share: nl_init NAME, cl_setup, vault-a, vault-b and
# vault-c (10.77.0.11-13, regions r1-r3), their links, then each vault
# named in CL_START (space-separated; default all three) configured with
# CONFIG_EXTRA and started with the START_ARGs. LINKS "later": every link
# gets "delay 0ms" for now (a bulk backup over 100-300 ms round trips takes
# minutes: gRPC's flow-control window, not the link, is the limit), and the
# test calls cl_delays once the data is in; linkem needs that first
# nl_netem before the vaults start. Any other LINKS: cl_delays LINKS now.
cl_cluster() {
    local name=$1 links=$2 extra=${3:-} v
    local -a start
    shift $(($# < 3 ? $# : 3))
    nl_init "$name"
    cl_setup
    cl_vault vault-a 10.77.0.11 r1
    cl_vault vault-b 10.77.0.12 r2
    cl_vault vault-c 10.77.0.13 r3
    if [ "$links" = later ]; then
        for v in "${CL_VAULTS[@]}"; do
            nl_netem "$v" "delay 0ms"
        done
    else
        cl_delays "$links"
    fi
    if [ -n "${CL_START:-}" ]; then
        read -r -a start <<<"$CL_START"
    else
        start=("${CL_VAULTS[@]}")
    fi
    for v in "${start[@]}"; do
        cl_vault_config "$v" "$extra"
        cl_vault_start "$v" "$@"
    done
}

# cl_delays [NETEM...]: the regions' distances: vault-a, vault-b and
# vault-c get 50, 100 and 150 ms delay, plus NETEM (e.g. "loss 1%").
cl_delays() {
    local more=${1:+ $1}
    nl_netem vault-a "delay 50ms$more"
    nl_netem vault-b "delay 100ms$more"
    nl_netem vault-c "delay 150ms$more"
}

# cl_addr VAULT: "ip:port".
cl_addr() { printf '%s:%s\n' "${NL_IP[$1]}" "$CL_PORT"; }

# cl_vault_config VAULT [EXTRA]: writes VAULT/vault.conf: its name,
# region, every other declared vault as a peer, sync settings from
# CL_SYNC_* and EXTRA (libconfig text) appended.
cl_vault_config() {
    local v=$1 extra=${2:-} p d=$NL_DIR/$1
    {
        echo "listen = \"$(cl_addr "$v")\";"
        echo "port_file = \"$d/port\";"
        echo "data_dir = \"$d/data\";"
        [ "${CL_REPLICATION:-1}" = 0 ] || echo "name = \"$v\";"
        echo "region = \"${CL_REGION[$v]}\";"
        echo "log_level = \"info\";"
        echo "cache_size = \"16M\";"
        echo "workers = 4;"
        echo "shutdown_grace = \"2s\";"
        echo "tls = { cert = \"$NL_DIR/certs/$v.pem\";"
        echo "        key = \"$NL_DIR/certs/$v.key\";"
        echo "        client_ca = \"$NL_DIR/ca/ca.pem\"; };"
        echo "stats = { file = \"$d/vault.prom\"; interval = \"500ms\"; };"
        if [ "${CL_REPLICATION:-1}" = 0 ]; then
            echo "$extra"
            return 0
        fi
        echo "peers = ("
        local first=1
        for p in "${CL_VAULTS[@]}"; do
            [ "$p" != "$v" ] || continue
            [ "$first" = 1 ] || echo "  ,"
            first=0
            echo "  { name = \"$p\"; address = \"$(cl_addr "$p")\";"
            echo "    region = \"${CL_REGION[$p]}\"; }"
        done
        echo ");"
        echo "sync = { interval = \"$CL_SYNC_INTERVAL\";"
        echo "         bandwidth = \"$CL_SYNC_BANDWIDTH\";"
        echo "         timeout = \"$CL_SYNC_TIMEOUT\"; };"
        echo "$extra"
    } >"$d/vault.conf"
}

# cl_vault_start VAULT [ARGS...]: starts coffer-vault in its namespace
# (ARGS e.g. --test-mode --test-clock-offset 2d) and waits (30 s) until
# it wrote its port file and Health answers through coffer-admin.
cl_vault_start() {
    local v=$1 d=$NL_DIR/$1
    shift
    rm -f "$d/port"
    echo "=== start $(date -u +%T) $*" >>"$d/vault.log"
    nl_spawn "$v" "$v" "$d/vault.log" "$COFFER_VAULT_BIN" --config \
        "$d/vault.conf" "$@"
    local deadline=$(($(nl_now_ms) + 30000))
    while [ ! -s "$d/port" ]; do
        nl_alive "$v" || nl_fail "$v stopped at start ($d/vault.log)"
        [ "$(nl_now_ms)" -lt "$deadline" ] || nl_fail "$v: no port in 30 s"
        sleep 0.1
    done
}

# cl_vault_stop VAULT [SIGNAL]: TERM (clean, exit 0 expected) or KILL.
cl_vault_stop() {
    local v=$1 sig=${2:-TERM}
    nl_stop "$v" "$sig" 20
    if [ "$sig" = TERM ] && [ "$NL_RC" != 0 ]; then
        nl_fail "$v exited $NL_RC on SIGTERM, not 0"
    fi
}

# cl_ops_conf [VAULT...]: writes ops.conf (coffer-admin --connect) for the
# given vaults (default all) and prints its path.
cl_ops_conf() {
    local f=$NL_DIR/ops.conf list="" v
    [ $# -gt 0 ] || set -- "${CL_VAULTS[@]}"
    for v in "$@"; do
        list+="${list:+, }\"$(cl_addr "$v")\""
    done
    cat >"$f" <<EOF
vaults = [ $list ];
tls = { cert = "$NL_DIR/certs/operator.pem"; key = "$NL_DIR/certs/operator.key";
        ca = "$NL_DIR/ca/ca.pem"; };
timeout = "10s";
EOF
    echo "$f"
}

# cl_tenant_add [ARGS...]: registers $CL_TENANT on every vault (ARGS: e.g.
# --region r1 --region r2 --retention 1d).
cl_tenant_add() {
    cl_run tenant-add "$COFFER_ADMIN_BIN" tenant add "$CL_TENANT" "$@" \
        --reason "system test" --connect "$(cl_ops_conf)"
}

# cl_admin LOG ARGS...: coffer-admin ARGS --connect (all vaults).
cl_admin() {
    local log=$1
    shift
    cl_run "$log" "$COFFER_ADMIN_BIN" "$@" --connect "$(cl_ops_conf)"
}

# cl_agent_setup QUORUM VAULT... : agent/agent.conf backing up every
# mailbox listed in CL_MAILBOXES ("name=root" words) to the given vaults
# (with their regions), then coffer-agent init (view key, escrow copy).
cl_agent_setup() {
    local quorum=$1 v mb vaults="" mbs=""
    shift
    local d=$NL_DIR/agent
    mkdir -p "$d" "$NL_DIR/restore"
    for v in "$@"; do
        vaults+="${vaults:+, }{ address = \"$(cl_addr "$v")\"; name = \"$v\";"
        vaults+=" region = \"${CL_REGION[$v]}\"; }"
    done
    for mb in "${CL_MAILBOXES[@]}"; do
        mbs+="${mbs:+, }{ name = \"${mb%%=*}\"; root = \"${mb#*=}\"; }"
    done
    cat >"$d/agent.conf" <<EOF
tenant = "$CL_TENANT";
key_file = "$d/view.key";
passphrase_file = "$d/view.pass";
state_dir = "$d/state";
lock_file = "$d/agent.lock";
log_level = "info";
mailboxes = ( $mbs );
vaults = ( $vaults );
quorum = $quorum;
timeouts = { call = "5s"; stream = "2m"; stall = "10s"; };
tls = { ca = "$NL_DIR/ca/ca.pem"; cert = "$NL_DIR/certs/agent.pem";
        key = "$NL_DIR/certs/agent.key"; };
EOF
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$NL_DIR/restore/escrow.pass"
    chmod 600 "$NL_DIR/restore/escrow.pass"
    cl_run agent-init "$COFFER_AGENT_BIN" init --config "$d/agent.conf" \
        --escrow "$NL_DIR/restore/escrow.key" \
        --escrow-passphrase-file "$NL_DIR/restore/escrow.pass"
}

# cl_backup LOG: one coffer-agent backup run (--json in logs/LOG.json);
# returns its exit code (0 ok, 5 partial: some vault missed it).
cl_backup() {
    local rc=0
    nl_exec cl "$COFFER_AGENT_BIN" backup --config "$NL_DIR/agent/agent.conf" \
        --json >"$NL_DIR/logs/$1.json" 2>"$NL_DIR/logs/$1.log" || rc=$?
    return "$rc"
}

# cl_restore_conf NAME VAULT... : restore/NAME.conf reading from the given
# vaults in that order (admin_tls: admin1; NAME2 variant: admin2 via
# CL_ADMIN_STEM). Prints its path.
cl_restore_conf() {
    local name=$1 v list=""
    shift
    for v in "$@"; do
        list+="${list:+, }\"$(cl_addr "$v")\""
    done
    local f=$NL_DIR/restore/$name.conf stem=${CL_ADMIN_STEM:-admin}
    cat >"$f" <<EOF
tenant = "$CL_TENANT";
key_file = "$NL_DIR/restore/escrow.key";
passphrase_file = "$NL_DIR/restore/escrow.pass";
vaults = [ $list ];
tls = { ca = "$NL_DIR/ca/ca.pem"; cert = "$NL_DIR/certs/restore.pem";
        key = "$NL_DIR/certs/restore.key"; };
admin_tls = { cert = "$NL_DIR/certs/$stem.pem"; key = "$NL_DIR/certs/$stem.key"; };
timeout = "${CL_RESTORE_TIMEOUT:-15s}";
log_level = "info";
EOF
    echo "$f"
}

# cl_snapshot_ids VAULT [MAILBOX]: the header IDs (hex, sorted) VAULT
# lists, through coffer-restore snapshots --json from that vault alone.
cl_snapshot_ids() {
    local v=$1 mb=${2:-} conf args=()
    conf=$(cl_restore_conf "only-$v" "$v")
    [ -z "$mb" ] || args=(--mailbox "$mb")
    nl_exec cl "$COFFER_RESTORE_BIN" --config "$conf" snapshots "${args[@]}" \
        --json 2>>"$NL_DIR/logs/snapshots-$v.err" |
        python3 -c '
import json, sys
d = json.load(sys.stdin)
if "snapshots" not in d:
    sys.exit("snapshots failed: %s" % d)
for s in sorted(x["id"] for x in d["snapshots"]):
    print(s)
'
}

# cl_store_dump VAULT OUT: with VAULT stopped, writes a sorted listing of
# its tenant store: snapshots (ID, held, header hash), tombstones (ID) and
# objects (ID, BLAKE2b-256 of the stored bytes) - see store_dump.c.
cl_store_dump() {
    [ -x "${COFFER_STORE_DUMP_BIN:-}" ] ||
        nl_fail "COFFER_STORE_DUMP_BIN not set (tests/CMakeLists.txt)"
    "$COFFER_STORE_DUMP_BIN" "$NL_DIR/$1/data" "$CL_TENANT" >"$2.raw" \
        2>"$2.err" || nl_fail "store_dump $1: $(cat "$2.err")"
    LC_ALL=C sort "$2.raw" >"$2"
}

# cl_stat VAULT METRIC_REGEX: the sum of the values of the metric lines
# of VAULT's stats file matching the regex (0 when none).
cl_stat() {
    local f=$NL_DIR/$1/vault.prom
    [ -f "$f" ] || {
        echo 0
        return
    }
    awk -v re="$2" '$0 !~ /^#/ && $1 ~ re { s += $NF } END { printf "%d\n", s }' "$f"
}

# cl_sync_status_json LOG [ARGS]: coffer-admin replication status --json
# (all vaults) into logs/LOG.log; returns its exit code.
cl_sync_status() {
    local log=$1
    shift
    cl_try "$log" "$COFFER_ADMIN_BIN" replication status --json "$@" \
        --connect "$(cl_ops_conf)"
}

# cl_sync_now: coffer-admin replication sync on every vault (ignored when
# the command is missing or fails: rounds also run every interval).
cl_sync_now() {
    cl_try sync-now "$COFFER_ADMIN_BIN" replication sync \
        --connect "$(cl_ops_conf)" || true
}

# cl_same_snapshots MAILBOX? : true when every vault lists the same
# snapshot IDs, non-empty (CL_SNAPS holds the listing).
cl_same_snapshots() {
    local v first="" cur
    for v in "${CL_VAULTS[@]}"; do
        cur=$(cl_snapshot_ids "$v" "$@") || return 1
        [ -n "$cur" ] || return 1
        if [ -z "$first" ]; then
            first=$cur
        elif [ "$cur" != "$first" ]; then
            return 1
        fi
    done
    # shellcheck disable=SC2034 # the result, for the caller
    CL_SNAPS=$first
}

# cl_compare_trees A B: byte-exact comparison (paths, bytes) of two trees;
# fails the test on a difference.
cl_compare_trees() {
    diff -r "$1" "$2" >"$NL_DIR/logs/diff.log" 2>&1 ||
        nl_fail "restored tree differs from the original: $(head -n 5 "$NL_DIR/logs/diff.log")"
}

# cl_maildir NAME MESSAGES [MIN_BODY]: generates one user's Maildir with
# bench/gen_corpus under $NL_DIR/mail-NAME; prints its root.
cl_maildir() {
    local name=$1 n=$2 out=$NL_DIR/mail-$1
    [ -x "${COFFER_GEN_CORPUS_BIN:-}" ] || nl_skip "COFFER_GEN_CORPUS_BIN not set"
    "$COFFER_GEN_CORPUS_BIN" --domains 1 --users 1 --messages-per-user "$n" \
        --seed "$(( $(cksum <<<"$name" | cut -d' ' -f1) % 100000 ))" \
        --quiet "$out" >"$NL_DIR/logs/gen-$name.log" 2>&1 ||
        nl_fail "gen_corpus $name: $(tail -n 3 "$NL_DIR/logs/gen-$name.log")"
    find "$out" -mindepth 3 -maxdepth 3 -type d -name Maildir | head -n 1
}

# cl_synced_since VAULT TS_S: true when VAULT's stats file has at least
# one coffer_vault_sync_last_ok_timestamp_seconds line and every one of
# them is at or after TS_S (Unix seconds): a full round with each peer
# ended after TS_S. (The vault's own clock: a test-mode offset only moves
# it later.)
cl_synced_since() {
    local f=$NL_DIR/$1/vault.prom
    [ -f "$f" ] || return 1
    awk -v ts="$2" '
        $1 ~ /^coffer_vault_sync_last_ok_timestamp_seconds/ {
            n++; if ($NF + 0 < ts) bad++ }
        END { exit !(n > 0 && bad == 0) }' "$f"
}

# cl_wait_rounds TIMEOUT_S VAULT...: waits until each VAULT completed a
# sync round with every peer that started after this call (two rounds'
# worth: the stamp must pass now + 1 s, so a round already in flight
# does not count).
cl_wait_rounds() {
    local t=$1 v ts
    shift
    ts=$(($(date +%s) + 1))
    for v in "$@"; do
        nl_wait_until "$t" "a full sync round of $v after $ts" \
            cl_synced_since "$v" "$ts"
    done
}

# cl_damage_object VAULT ID: with VAULT stopped, flips one byte in the
# middle of object ID's bytes where they sit in a RocksDB blob file of
# its tenant store (the object must be large enough to live in a blob
# file, >= 4 KiB): the damage a disk could do, found only by reading it.
cl_damage_object() {
    local v=$1 id=$2 raw=$NL_DIR/logs/object-$2.raw
    "$COFFER_STORE_DUMP_BIN" "$NL_DIR/$v/data" "$CL_TENANT" "$id" >"$raw" ||
        nl_fail "store_dump could not read object $id of $v"
    python3 - "$raw" "$NL_DIR/$v/data/$CL_TENANT" <<'PY' || nl_fail "could not damage $id on $v"
import glob, os, sys
raw = open(sys.argv[1], "rb").read()
if len(raw) < 4096:
    sys.exit("object is %d bytes: not in a blob file" % len(raw))
hits = []
for f in sorted(glob.glob(os.path.join(sys.argv[2], "*.blob"))):
    data = open(f, "rb").read()
    at = data.find(raw)
    if at >= 0:
        hits.append((f, at))
if len(hits) != 1:
    sys.exit("object found in %d blob files, not 1" % len(hits))
f, at = hits[0]
pos = at + len(raw) // 2
with open(f, "r+b") as fh:
    fh.seek(pos)
    b = fh.read(1)
    fh.seek(pos)
    fh.write(bytes([b[0] ^ 0x5A]))
print("flipped byte %d of %s" % (pos, os.path.basename(f)))
PY
}

# cl_status_field VAULT PEER FIELD: one field of VAULT's line for PEER
# ("" = its own line) of tenant $CL_TENANT in `coffer-admin replication
# status --json` (all vaults); fails the test when the command fails.
cl_status_field() {
    cl_sync_status status || nl_fail "coffer-admin replication status failed (logs/status.log)"
    grep '^{' "$NL_DIR/logs/status.log" | python3 -c '
import json, sys
addr, peer, field, tenant = sys.argv[1:5]
d = json.load(sys.stdin)
for v in d["vaults"]:
    if v["vault"] != addr:
        continue
    for line in v.get("sync", []):
        if line["tenant"] == tenant and line["peer"] == peer:
            print(line[field])
            sys.exit(0)
sys.exit("no line for %s peer %r" % (addr, peer))
' "$(cl_addr "$1")" "$2" "$3" "$CL_TENANT"
}

# cl_status_converged: true when `coffer-admin replication status --json`
# answers for every vault and each of their peer lines of $CL_TENANT
# shows its last round succeeded (last_ok_ms >= last_attempt_ms) with
# nothing behind; prints the offending lines otherwise.
cl_status_converged() {
    cl_sync_status status || return 1
    grep '^{' "$NL_DIR/logs/status.log" | python3 -c '
import json, sys
want, tenant = int(sys.argv[1]), sys.argv[2]
d = json.load(sys.stdin)
bad, seen = [], 0
for v in d["vaults"]:
    if not v.get("ok"):
        bad.append("%s: not ok" % v["vault"])
    for l in v.get("sync", []):
        if l["tenant"] != tenant or l["peer"] == "":
            continue
        seen += 1
        if l["behind"] != 0 or l["last_ok_ms"] < l["last_attempt_ms"]:
            bad.append("%s peer %s: behind %d, last_error %r" %
                       (v["vault"], l["peer"], l["behind"], l["last_error"]))
if seen != want:
    bad.append("%d peer lines, not %d" % (seen, want))
print("\n".join(bad))
sys.exit(1 if bad else 0)
' "$((${#CL_VAULTS[@]} * (${#CL_VAULTS[@]} - 1)))" "$CL_TENANT"
}
