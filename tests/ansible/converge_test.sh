#!/usr/bin/env bash
# A real converge of the Coffer roles against this machine (connection
# local), every managed host rooted in its own throwaway prefix
# ($T/vault-a, $T/mail1 ...; the roles write nothing outside it), then a
# backup, a restore compared byte for byte with the original, the
# recovery test and retention, all through the deployed configuration;
# finally a second converge that must change nothing.
#
# Hosts: three vaults in three regions (r1, r2, r3; each other's
# replication peers), one mail host, one verification host. The package
# is the .deb `cpack -G DEB` makes from COFFER_BUILD_DIR. systemd does not
# run here, so the test starts each vault itself, with the ExecStart line
# of the unit the role rendered, and runs the oneshot units' ExecStart
# lines the same way.
#
# Environment (the ctest entry sets them): COFFER_BUILD_DIR (a built tree
# with CPackConfig.cmake), COFFER_SOURCE_DIR, COFFER_ADMIN_BIN,
# COFFER_AGENT_BIN (the control node's tools), COFFER_GEN_CORPUS_BIN.
# COFFER_DEB=FILE uses that package instead of running cpack.
# COFFER_KEEP=1 keeps the work folder. Exit 77: a tool is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
src=${COFFER_SOURCE_DIR:-$(cd "$here/../.." && pwd -P)}
build=${COFFER_BUILD_DIR:-$src/build}
admin_bin=${COFFER_ADMIN_BIN:-$build/vault/coffer-admin}
agent_bin=${COFFER_AGENT_BIN:-$build/agent/coffer-agent}
gen_bin=${COFFER_GEN_CORPUS_BIN:-$build/bench/gen_corpus}

skip() {
    echo "converge_test: SKIP: $*" >&2
    exit 77
}
for tool in ansible-playbook ansible-vault dpkg-deb openssl python3 setpriv; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/deps.sh)"
done
if [ -z "${COFFER_DEB:-}" ]; then
    command -v cpack >/dev/null || skip "cpack is not installed"
    [ -f "$build/CPackConfig.cmake" ] || skip "no CPackConfig.cmake in $build"
fi
for b in "$admin_bin" "$agent_bin" "$gen_bin"; do
    [ -x "$b" ] || skip "$b is not built"
done
# The modules run with Debian's python3, which has ansible's dependencies.
PY=/usr/bin/python3
[ -x "$PY" ] || skip "/usr/bin/python3 is missing"

T=$(mktemp -d /tmp/coffer-ansible.XXXXXX)
PIDS=()
fail() {
    echo "converge_test: FAIL: $*" >&2
    exit 1
}
cleanup() {
    local rc=$? p i
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for ((i = 0; i < 150; i++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ] || [ "${COFFER_KEEP:-0}" = 1 ]; then
        echo "converge_test: work folder kept: $T" >&2
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
t_start=$(now_ms)
step() { printf '\n== [%5.1fs] %s\n' "$(awk -v a="$(now_ms)" -v b="$t_start" 'BEGIN { print (a - b) / 1000 }')" "$*"; }

# ---- the package ------------------------------------------------------------
step "package"
if [ -n "${COFFER_DEB:-}" ]; then
    DEB=$COFFER_DEB
else
    (cd "$build" && cpack -G DEB -B "$T/deb" >"$T/cpack.log" 2>&1) ||
        { tail -20 "$T/cpack.log" >&2; fail "cpack could not make the .deb"; }
    DEB=$(ls "$T"/deb/coffer_*.deb)
fi
[ -f "$DEB" ] || fail "no package at $DEB"
dpkg-deb -c "$DEB" >"$T/deb-contents.txt" || fail "dpkg-deb cannot read $DEB"
for p in coffer-vault coffer-admin coffer-agent coffer-restore; do
    grep -q "\./usr/bin/$p\$" "$T/deb-contents.txt" || fail "$DEB lacks $p"
done
echo "package: $DEB"

# ---- inventory --------------------------------------------------------------
step "inventory"
read -r P1 P2 P3 < <($PY - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*[s.getsockname()[1] for s in socks])
EOF
)
"$gen_bin" --domains 1 --users 2 --messages-per-user 60 --quiet "$T/mail" >/dev/null
mapfile -t MAILDIRS < <(find "$T/mail" -mindepth 3 -maxdepth 3 -type d -name Maildir | sort)
[ "${#MAILDIRS[@]}" -eq 2 ] || fail "gen_corpus made ${#MAILDIRS[@]} Maildirs, not 2"
MB1=$(basename "$(dirname "${MAILDIRS[0]}")")@$(basename "$(dirname "$(dirname "${MAILDIRS[0]}")")")
MB2=$(basename "$(dirname "${MAILDIRS[1]}")")@$(basename "$(dirname "$(dirname "${MAILDIRS[1]}")")")
USER_NAME=$(id -un)
GROUP_NAME=$(id -gn)
mkdir -p "$T/inventory/group_vars" "$T/inventory/host_vars"
cat >"$T/inventory/hosts.yml" <<EOF
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: $PY
  children:
    coffer_vaults:
      hosts:
        vault-a: { coffer_vault_region: r1, coffer_vault_port: $P1 }
        vault-b: { coffer_vault_region: r2, coffer_vault_port: $P2 }
        vault-c: { coffer_vault_region: r3, coffer_vault_port: $P3 }
    coffer_agents:
      hosts:
        mail1:
    coffer_verify_hosts:
      hosts:
        verify1:
EOF
cat >"$T/inventory/group_vars/all.yml" <<EOF
coffer_test_root: $T
coffer_root: "{{ coffer_test_root }}/{{ inventory_hostname }}"
coffer_user: $USER_NAME
coffer_group: $GROUP_NAME
coffer_install_method: deb
coffer_deb_file: $DEB
coffer_controller_dir: $T/controller
coffer_admin_controller_bin: $admin_bin
coffer_agent_controller_bin: $agent_bin
coffer_cert_days: 30
coffer_tenants:
  - name: acme
    regions: [r1, r2, r3]
    retention: 30d
EOF
cat >"$T/inventory/group_vars/coffer_vaults.yml" <<'EOF'
coffer_vault_name: "{{ inventory_hostname }}"
coffer_vault_listen: "127.0.0.1:{{ coffer_vault_port }}"
coffer_vault_address: "127.0.0.1:{{ coffer_vault_port }}"
coffer_vault_cert_dns: [localhost]
coffer_vault_cert_ip: [127.0.0.1]
coffer_vault_cache_size: 16M
coffer_vault_shutdown_grace: 2s
EOF
cat >"$T/inventory/host_vars/mail1.yml" <<EOF
coffer_agent_tenant: acme
coffer_agent_mailboxes:
  - { name: "$MB1", root: "${MAILDIRS[0]}" }
  - { name: "$MB2", root: "${MAILDIRS[1]}" }
EOF
cat >"$T/inventory/host_vars/verify1.yml" <<'EOF'
coffer_verify_tenant: acme
coffer_verify_sample_mailboxes: 0
coffer_verify_sample_messages: 0
EOF
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/vault-pass"
chmod 600 "$T/vault-pass"

export ANSIBLE_CONFIG=$src/ansible/ansible.cfg
export ANSIBLE_VAULT_PASSWORD_FILE=$T/vault-pass
export ANSIBLE_HOME=$T/ansible-home
export ANSIBLE_LOCAL_TEMP=$T/ansible-tmp
export ANSIBLE_REMOTE_TEMP=$T/ansible-remote-tmp
export ANSIBLE_NOCOLOR=1
export ANSIBLE_FORCE_COLOR=0
# Every host is local: run them all at once, modules piped to python.
export ANSIBLE_FORKS=10
export ANSIBLE_PIPELINING=1

# play LOG PLAYBOOK...: runs the playbooks; the recap is checked by callers.
play() {
    local log=$T/$1.log
    shift
    local pb=()
    for p in "$@"; do pb+=("$src/ansible/$p"); done
    local t0
    t0=$(now_ms)
    if ! ansible-playbook -i "$T/inventory/hosts.yml" "${pb[@]}" >"$log" 2>&1; then
        grep -B2 -A12 'fatal:\|ERROR' "$log" | head -60 >&2
        fail "ansible-playbook $* failed (log: $log)"
    fi
    echo "ansible-playbook $*: $(($(now_ms) - t0)) ms"
    sed -n '/^PLAY RECAP/,$p' "$log"
}
# recap_total LOG FIELD: the sum of FIELD (changed, failed ...) over hosts.
recap_total() {
    sed -n '/^PLAY RECAP/,$p' "$1" | grep -o "$2=[0-9]*" | cut -d= -f2 |
        awk '{ s += $1 } END { print s + 0 }'
}
# exec_start UNIT_FILE: the unit's ExecStart command line.
exec_start() {
    local line
    line=$(grep '^ExecStart=' "$1") || fail "$1 has no ExecStart"
    printf '%s\n' "${line#ExecStart=}"
}

# ---- stage 1: the control node and the vaults ---------------------------------
step "converge: control node and vaults"
play converge-vaults controller.yml vaults.yml

for v in a b c; do
    unit=$T/vault-$v/etc/systemd/system/coffer-vault.service
    [ -f "$unit" ] || fail "no rendered unit $unit"
    read -r -a cmd < <(exec_start "$unit")
    case ${cmd[0]} in
    "$T/vault-$v/usr/bin/coffer-vault") ;;
    *) fail "vault-$v's unit runs ${cmd[0]}, not the installed program" ;;
    esac
    setpriv --pdeathsig TERM -- "${cmd[@]}" >"$T/vault-$v.log" 2>&1 &
    PIDS+=($!)
done
for p in $P1 $P2 $P3; do
    $PY - "$p" <<'EOF' || fail "a vault did not listen on $p within 30 s (see $T/vault-*.log)"
import socket, sys, time
deadline = time.time() + 30
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
done
echo "vaults listening on $P1 $P2 $P3"

# ---- stage 2: the whole site -------------------------------------------------
step "converge: site.yml"
play converge-site site.yml
[ "$(recap_total "$T/converge-site.log" failed)" = 0 ] || fail "site.yml reported failures"
[ "$(recap_total "$T/converge-site.log" changed)" -gt 0 ] ||
    fail "the first site.yml run changed nothing (agents and verify host were new)"
grep -q 'vault-a' "$T/converge-site.log" || fail "no vault in the site run"
"$admin_bin" tenant list --json --connect "$T/controller/operator/ops.conf" \
    >"$T/tenants.json" || fail "coffer-admin tenant list failed"
$PY - "$T/tenants.json" <<'EOF' || fail "acme is not registered on every vault as configured"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["vaults"]) == 3, d
for v in d["vaults"]:
    t = {x["name"]: x for x in v["tenants"]}["acme"]
    assert sorted(t["regions"]) == ["r1", "r2", "r3"], t
print("acme registered on 3 vaults, regions r1 r2 r3")
EOF

# What went where: the full keyring only to the verification host, keys
# private, configuration closed to others.
step "files and permissions"
mode() { stat -c %a "$1"; }
[ "$(mode "$T/mail1/etc/coffer")" = 750 ] || fail "mail1 /etc/coffer is $(mode "$T/mail1/etc/coffer")"
for f in mail1/etc/coffer/agent.key mail1/etc/coffer/acme-view.key \
    mail1/etc/coffer/acme-view.pass verify1/etc/coffer/acme.escrow \
    verify1/etc/coffer/acme.pass verify1/etc/coffer/restore.key \
    verify1/etc/coffer/admin.key vault-a/etc/coffer/vault.key; do
    [ -f "$T/$f" ] || fail "$f is missing"
    [ "$(mode "$T/$f")" = 600 ] || fail "$f has mode $(mode "$T/$f"), not 600"
done
[ "$(mode "$T/vault-a/var/lib/coffer-vault")" = 700 ] || fail "vault data dir not 0700"
if find "$T/mail1" -name '*.escrow' | grep -q .; then
    fail "an escrow keyring reached the mail host"
fi
# The agent view is not the full keyring (the escrow file): different bytes.
cmp -s "$T/mail1/etc/coffer/acme-view.key" "$T/verify1/etc/coffer/acme.escrow" &&
    fail "mail1 holds the full keyring"
# Keys at rest on the control node are ansible-vault files only.
for f in view.key escrow.key secrets.yml; do
    # shellcheck disable=SC2016 # the literal header of an encrypted file
    [ "$(head -c 14 "$T/controller/keys/acme/$f")" = '$ANSIBLE_VAULT' ] ||
        fail "controller keys/acme/$f is not ansible-vault encrypted"
done
# TLS keys were made on the hosts: the control node holds no host key.
if find "$T/controller/certs" -name '*.key' | grep -q .; then
    fail "a host's private key is on the control node"
fi
grep -q 'name = "vault-b"' "$T/vault-a/etc/coffer/vault.conf" || fail "vault-a has no peer vault-b"
grep -q "region = \"r3\"" "$T/mail1/etc/coffer/agent.conf" || fail "agent.conf lacks region r3"
grep -q "tcp dport $P1 accept" "$T/vault-a/etc/nftables.d/coffer-vault.nft" ||
    fail "vault-a's firewall does not open $P1"
echo "modes and placement of keys: ok"

# ---- the backup, through the rendered unit -------------------------------------
step "backup (coffer-agent.service ExecStart)"
read -r -a cmd < <(exec_start "$T/mail1/etc/systemd/system/coffer-agent.service")
rc=0
"${cmd[@]}" >"$T/backup.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || { cat "$T/backup.out" >&2; fail "backup exited $rc"; }
"$T/mail1/usr/bin/coffer-agent" snapshots --config "$T/mail1/etc/coffer/agent.conf" \
    --json >"$T/snapshots.json" || fail "coffer-agent snapshots failed"
$PY - "$T/snapshots.json" "$MB1" "$MB2" <<'EOF' || fail "snapshots are not on all three vaults"
import json, sys
d = json.load(open(sys.argv[1]))
names = {m["name"]: m for m in d["mailboxes"]}
for mb in sys.argv[2:]:
    snaps = names[mb]["snapshots"]
    assert len(snaps) == 1, (mb, snaps)
    assert sorted(snaps[0]["vaults"]) == ["vault-a", "vault-b", "vault-c"], snaps
print("one snapshot per mailbox on vault-a, vault-b, vault-c")
EOF

# ---- replication between the vaults, as the role configured it -------------------
step "replication: every vault syncs acme with its two peers"
OPS=$T/controller/operator/ops.conf
t_sync=$(now_ms)
"$admin_bin" replication sync --tenant acme --connect "$OPS" >"$T/sync.out" 2>&1 ||
    { cat "$T/sync.out" >&2; fail "replication sync was refused"; }
ok=0
for ((i = 0; i < 300; i++)); do
    rc=0
    "$admin_bin" replication status --tenant acme --json --connect "$OPS" \
        >"$T/repl.json" 2>"$T/repl.err" || rc=$?
    if [ "$rc" = 0 ] && $PY - "$T/repl.json" "$t_sync" <<'EOF'; then
import json, sys
d = json.load(open(sys.argv[1]))
t_sync = int(sys.argv[2])
assert len(d["vaults"]) == 3 and not d["alert"]
for v in d["vaults"]:
    peers = [l for l in v["sync"] if l["tenant"] == "acme" and l["peer"]]
    assert len(peers) == 2, peers
    # A round that succeeded after the one the test asked for.
    assert all(l["last_ok_ms"] >= t_sync and not l["last_error"] for l in peers), peers
EOF
        ok=1
        break
    fi
    sleep 0.1
done
[ "$ok" = 1 ] || { cat "$T/repl.json" "$T/repl.err" >&2; fail "the vaults did not sync with their peers within 30 s"; }
echo "each vault synced acme with its 2 peers; none behind"

# ---- restore and compare -------------------------------------------------------
step "restore (restore.conf on verify1) and compare"
R=("$T/verify1/usr/bin/coffer-restore" --config "$T/verify1/etc/coffer/restore.conf")
"${R[@]}" restore --mailbox "$MB1" --to "$T/restored" --json >"$T/restore.json" ||
    fail "coffer-restore restore failed"
$PY - "${MAILDIRS[0]}" "$T/restored" <<'EOF' || fail "the restored mailbox differs"
import os, sys
src, dst = sys.argv[1:3]
def files(top, skip_tmp):
    out = {}
    for d, dirs, fs in os.walk(top):
        rel = os.path.relpath(d, top)
        if skip_tmp and os.path.basename(d) == "tmp":
            continue
        for f in fs:
            st = os.lstat(os.path.join(d, f))
            out[os.path.normpath(os.path.join(rel, f))] = st
    return out
a, b = files(src, True), files(dst, False)
assert a.keys() == b.keys(), (sorted(a.keys() ^ b.keys())[:5])
n = 0
for r in a:
    x, y = a[r], b[r]
    assert x.st_size == y.st_size and x.st_mtime_ns == y.st_mtime_ns, r
    assert open(os.path.join(src, r), "rb").read() == open(os.path.join(dst, r), "rb").read(), r
    n += 1
assert n > 50, n
print("restored %d files: same paths, bytes and mtimes" % n)
EOF

# ---- recovery test and retention, through their units ---------------------------
step "recovery test (coffer-verify.service ExecStart)"
read -r -a cmd < <(exec_start "$T/verify1/etc/systemd/system/coffer-verify.service")
rc=0
"${cmd[@]}" >"$T/verify.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || { tail -20 "$T/verify.out" >&2; fail "verify exited $rc"; }
$PY - "$T/verify1/var/lib/coffer/verify/report.json" <<'EOF' || fail "verify report is not a pass on 3 replicas"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True, d.get("failures")
reps = d["replicas"]
assert len(reps) == 3, reps
print("verify: ok on %d replicas" % len(reps))
EOF
step "retention (coffer-retention.service ExecStart)"
read -r -a cmd < <(exec_start "$T/verify1/etc/systemd/system/coffer-retention.service")
rc=0
"${cmd[@]}" >"$T/retention.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || { tail -20 "$T/retention.out" >&2; fail "retention exited $rc"; }
echo "retention: exit 0"

# ---- idempotence ----------------------------------------------------------------
step "second converge: nothing may change"
play converge-again site.yml
changed=$(recap_total "$T/converge-again.log" changed)
if [ "$changed" != 0 ]; then
    grep -B1 '^changed:' "$T/converge-again.log" | head -40 >&2
    fail "the second converge changed $changed things"
fi
echo "second converge: changed=0"

# The units as rendered (real programs in the prefix) pass systemd-analyze.
if command -v systemd-analyze >/dev/null; then
    step "systemd-analyze verify on the converged units"
    mapfile -t units < <(find "$T"/*/etc/systemd/system -name 'coffer-*')
    out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "${units[@]}" 2>&1) ||
        fail "systemd-analyze verify: $out"
    if grep -q 'coffer-' <<<"$out"; then
        fail "systemd-analyze verify: $out"
    fi
    echo "${#units[@]} units verified"
fi

step "stop the vaults"
for p in "${PIDS[@]}"; do
    kill -TERM "$p"
done
for p in "${PIDS[@]}"; do
    rc=0
    wait "$p" || rc=$?
    [ "$rc" = 0 ] || fail "a vault exited $rc on SIGTERM"
done
PIDS=()
step "converge_test: PASS"
