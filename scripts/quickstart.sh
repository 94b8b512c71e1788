#!/usr/bin/env bash
# The README's quick start: from a bare Debian machine to a verified
# restore on one host. Installs dependencies, builds the programs, makes a
# CA and certificates in a local folder, starts a vault on 127.0.0.1, backs
# up a Maildir (the one given, or a generated sample), restores it, checks
# the copy byte for byte against the original and prints what it did.
#
#   scripts/quickstart.sh [MAILDIR]
#
# MAILDIR is only read. Its mailbox is named after its last path component
# (the generated sample's: quickstart).
# Environment:
#   COFFER_QUICKSTART_DIR  the working folder (default ./coffer-quickstart);
#                          a previous run's folder is replaced, any other
#                          non-empty folder is refused
#   BUILD_DIR              build tree, relative to the repository root as
#                          in scripts/test.sh (default build)
#   COFFER_SKIP_DEPS=1     do not run scripts/deps.sh
#   COFFER_SKIP_BUILD=1    use the programs already built in BUILD_DIR
#   COFFER_QUICKSTART_CLEANUP=1  remove the working folder after a success
#                          (the ctest entry uses this)
#
# Exit status: 0 when the restored copy is identical, 1 on any failure
# (the message says which step and where its log is), 2 on a usage error.
set -euo pipefail

usage() {
    # The header comment, up to the first line that is not one.
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' \
        "${BASH_SOURCE[0]}"
}

case ${1:-} in
-h | --help)
    usage
    exit 0
    ;;
-*)
    echo "quickstart: unknown option $1 (see --help)" >&2
    exit 2
    ;;
esac
if [ $# -gt 1 ]; then
    echo "quickstart: at most one MAILDIR (see --help)" >&2
    exit 2
fi

# Every file made here holds keys or mail: nobody else needs to read them.
umask 077

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TENANT=quickstart
MARKER_TEXT="coffer quickstart working folder; scripts/quickstart.sh replaces it"
# What a run creates in its folder; a re-run removes these names and
# nothing else, and refuses a folder holding anything more.
OWNED=(.coffer-quickstart ca certs vault agent restore ops.conf sample
    restored logs report.txt)

STEP="starting"
WORK=""
LOGS="" # set once this run made its logs folder
VAULT_PID=""
FAILED_REPORTED=0

say() { printf '%s\n' "$*"; }
step() {
    STEP=$1
    printf '\n==> %s\n' "$1"
}
# Shows a command the way a user could run it from the working folder.
show() {
    local out="   $" a
    for a in "$@"; do
        case $a in
        '>'* | '2>'* | '&') out+=" $a" ;; # redirections, as typed
        *) out+=" $(printf '%q' "$a")" ;;
        esac
    done
    printf '%s\n' "$out"
}

vault_running() {
    [ -n "$VAULT_PID" ] || return 1
    local state
    # A vault that exited but was not waited for yet is a zombie: stopped.
    state=$(awk '{print $3}' "/proc/$VAULT_PID/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

die() {
    printf '\nquickstart: FAILED while %s: %s\n' "$STEP" "$*" >&2
    if [ -n "$VAULT_PID" ] && ! vault_running && [ -f "$WORK/vault/vault.log" ]; then
        printf 'quickstart: the vault is no longer running; its log ends:\n' >&2
        tail -n 15 "$WORK/vault/vault.log" | sed 's/^/    /' >&2
    fi
    if [ -n "$LOGS" ]; then
        printf 'quickstart: logs of every step: %s\n' "$LOGS" >&2
    fi
    FAILED_REPORTED=1
    exit 1
}

# run LOG CMD...: runs CMD from the working folder, its output kept in
# logs/LOG.log; on failure, the log's tail explains why.
run() {
    local log="$WORK/logs/$1.log" rc=0
    shift
    show "$(basename "$1")" "${@:2}"
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '    %s exited %d; %s ends:\n' "$(basename "$1")" "$rc" "$log" >&2
        tail -n 20 "$log" | sed 's/^/    /' >&2
        die "$(basename "$1") exited $rc"
    fi
}

stop_vault() {
    [ -n "$VAULT_PID" ] || return 0
    local pid=$VAULT_PID i rc=0
    kill -TERM "$pid" 2>/dev/null || true
    # SIGTERM lets calls finish for shutdown_grace (2 s here); give it 15 s
    # in all before the hard stop.
    for ((i = 0; i < 150; i++)); do
        vault_running || break
        sleep 0.1
    done
    if vault_running; then
        kill -KILL "$pid" 2>/dev/null || true
        say "quickstart: the vault did not stop within 15 s; killed it" >&2
    fi
    VAULT_PID=""
    wait "$pid" 2>/dev/null || rc=$?
    VAULT_EXIT=$rc
}

on_exit() {
    local rc=$?
    trap - EXIT
    stop_vault
    if [ "$rc" -ne 0 ] && [ "$FAILED_REPORTED" = 0 ]; then
        printf '\nquickstart: FAILED while %s (exit %d)\n' "$STEP" "$rc" >&2
        if [ -n "$LOGS" ]; then
            printf 'quickstart: logs of every step: %s\n' "$LOGS" >&2
        fi
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A libconfig string literal: quotes and backslashes escaped, control bytes
# as \xNN; other bytes (UTF-8 or not) pass as they are.
cfgstr() {
    local LC_ALL=C s=$1 out="" c i hex
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        \\ | \") out+="\\$c" ;;
        [[:cntrl:]])
            printf -v hex '\\x%02x' "'$c"
            out+=$hex
            ;;
        *) out+=$c ;;
        esac
    done
    printf '"%s"' "$out"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%02d' $(($1 / 1000)) $((($1 % 1000) / 10)); }
human() {
    if [ "$1" -lt 1024 ]; then
        echo "$1 B"
    else
        numfmt --to=iec-i --suffix=B --format='%.1f' "$1"
    fi
}

# ---- inputs, resolved before anything changes ------------------------------

STEP="checking the arguments"
MAILDIR=""
MAILBOX=$TENANT
if [ $# -eq 1 ]; then
    [ -d "$1" ] || die "$1 is not a directory"
    if [ ! -r "$1" ] || [ ! -x "$1" ]; then
        die "$1 cannot be read by $(id -un)"
    fi
    MAILDIR=$(cd -- "$1" && pwd -P)
    base=$(basename -- "$MAILDIR")
    if [ "$MAILDIR" != / ] && [ -n "$base" ]; then
        MAILBOX=$base
    fi
    if [ ! -d "$MAILDIR/cur" ] && [ ! -d "$MAILDIR/new" ]; then
        say "quickstart: note: $MAILDIR has no cur/ or new/; backing it up" \
            "as a plain tree of files" >&2
    fi
fi

WORK=${COFFER_QUICKSTART_DIR:-$PWD/coffer-quickstart}
case $WORK in
/*) ;;
*) WORK=$PWD/$WORK ;;
esac
if [ -L "$WORK" ]; then
    die "$WORK is a symbolic link; give the real folder"
fi
# Canonical before it exists, so that neither tree can hold the other
# (the Maildir is only read; the folder is replaced by the next run).
WORK=$(realpath -m -- "$WORK")
if [ -n "$MAILDIR" ]; then
    case "$WORK/" in
    "$MAILDIR"/*) die "the working folder $WORK would be inside $MAILDIR," \
        "which is only read; choose another with COFFER_QUICKSTART_DIR=..." ;;
    esac
    case "$MAILDIR/" in
    "$WORK"/*) die "$MAILDIR is inside the working folder $WORK, which a" \
        "quickstart replaces; choose another with COFFER_QUICKSTART_DIR=..." ;;
    esac
fi
BUILD=${BUILD_DIR:-build}
case $BUILD in
/*) ;;
*) BUILD=$root/$BUILD ;;
esac

# ---- dependencies and build ------------------------------------------------

if [ "${COFFER_SKIP_DEPS:-0}" = 1 ]; then
    step "Dependencies: skipped (COFFER_SKIP_DEPS=1)"
else
    step "Installing dependencies (scripts/deps.sh)"
    bash "$root/scripts/deps.sh" || die "scripts/deps.sh failed"
fi

PROGRAMS=(coffer-vault coffer-admin coffer-agent coffer-restore gen_corpus)
if [ "${COFFER_SKIP_BUILD:-0}" = 1 ]; then
    step "Build: skipped (COFFER_SKIP_BUILD=1), using $BUILD"
else
    step "Building the programs into $BUILD"
    cfg_args=()
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        # As scripts/test.sh does, so the suite can reuse this build.
        cfg_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    fi
    show cmake -S "$root" -B "$BUILD" "${cfg_args[@]}"
    cmake -S "$root" -B "$BUILD" "${cfg_args[@]}" >/dev/null ||
        die "cmake could not configure $BUILD"
    show cmake --build "$BUILD" -j "$(nproc)" --target "${PROGRAMS[@]}"
    cmake --build "$BUILD" -j "$(nproc)" --target "${PROGRAMS[@]}" ||
        die "the build failed"
fi
VAULT_BIN=$BUILD/vault/coffer-vault
ADMIN_BIN=$BUILD/vault/coffer-admin
AGENT_BIN=$BUILD/agent/coffer-agent
RESTORE_BIN=$BUILD/restore/coffer-restore
GEN_BIN=$BUILD/bench/gen_corpus
for b in "$VAULT_BIN" "$ADMIN_BIN" "$AGENT_BIN" "$RESTORE_BIN" "$GEN_BIN"; do
    [ -x "$b" ] || die "$b is missing: build first (or drop COFFER_SKIP_BUILD)"
done

# ---- the working folder ----------------------------------------------------

step "Preparing the working folder $WORK"
if [ -e "$WORK" ] && [ ! -d "$WORK" ]; then
    die "$WORK exists and is not a directory"
fi
if [ -d "$WORK" ] && [ -n "$(ls -A -- "$WORK")" ]; then
    if [ ! -f "$WORK/.coffer-quickstart" ] ||
        [ "$(head -n 1 "$WORK/.coffer-quickstart")" != "$MARKER_TEXT" ]; then
        die "$WORK is not empty and is not a quickstart folder; choose" \
            "another with COFFER_QUICKSTART_DIR=..."
    fi
    # Only what an earlier run made is removed, so anything else found
    # there stops the run before a single file is deleted.
    while IFS= read -r -d '' entry; do
        name=${entry##*/}
        known=0
        for o in "${OWNED[@]}"; do
            [ "$name" = "$o" ] && known=1
        done
        [ "$known" = 1 ] || die "$WORK holds $(printf '%q' "$name"), which a" \
            "quickstart did not make; move it away or choose another folder"
    done < <(find "$WORK" -mindepth 1 -maxdepth 1 -print0)
    pidfile=$WORK/vault/vault.pid
    if [ -f "$pidfile" ]; then
        old=$(head -n 1 "$pidfile")
        if [[ $old =~ ^[0-9]+$ ]] && [ -r "/proc/$old/cmdline" ] &&
            tr '\0' '\n' <"/proc/$old/cmdline" | grep -q 'coffer-vault$'; then
            die "the vault of an earlier run still runs (pid $old); stop it" \
                "with: kill $old"
        fi
    fi
    say "    replacing the previous quickstart run's files"
    for o in "${OWNED[@]}"; do
        rm -rf -- "${WORK:?}/$o"
    done
fi
mkdir -p -- "$WORK"
printf '%s\n' "$MARKER_TEXT" >"$WORK/.coffer-quickstart"
mkdir "$WORK/logs" "$WORK/certs" "$WORK/vault" "$WORK/agent" "$WORK/restore"
LOGS="$WORK/logs"
cd "$WORK"
say "    commands below run from this folder; programs are in $BUILD"

# ---- the mailbox -----------------------------------------------------------

if [ -z "$MAILDIR" ]; then
    step "Generating a sample Maildir (one user's mailbox) in sample/"
    run gen_corpus "$GEN_BIN" --domains 1 --users 1 --messages-per-user 300 \
        --quiet sample
    found=()
    while IFS= read -r -d '' d; do
        found+=("$d")
    done < <(find "$WORK/sample" -mindepth 3 -maxdepth 3 -type d \
        -name Maildir -print0)
    [ "${#found[@]}" -eq 1 ] || die "gen_corpus made ${#found[@]} Maildirs, not 1"
    MAILDIR=${found[0]}
fi
say "    mailbox \"$MAILBOX\" at $MAILDIR (read only)"

# ---- CA and certificates ---------------------------------------------------

step "Creating a CA and certificates (ca/, certs/)"
run ca-init "$ADMIN_BIN" ca init --dir ca --name "Coffer quickstart CA" --days 365
run cert-vault "$ADMIN_BIN" cert issue --ca ca --role vault --name quickstart-vault \
    --dns localhost --ip 127.0.0.1 --days 30 --out certs/vault
run cert-agent "$ADMIN_BIN" cert issue --ca ca --role agent --tenant "$TENANT" \
    --days 30 --out certs/agent
run cert-restore "$ADMIN_BIN" cert issue --ca ca --role restore \
    --tenant "$TENANT" --days 30 --out certs/restore
run cert-operator "$ADMIN_BIN" cert issue --ca ca --role operator \
    --name quickstart --days 30 --out certs/operator

# ---- the vault -------------------------------------------------------------

step "Starting coffer-vault on 127.0.0.1 (vault/)"
cat >vault/vault.conf <<EOF
# Written by scripts/quickstart.sh: one vault on loopback, a free port.
listen = "127.0.0.1:0";
port_file = $(cfgstr "$WORK/vault/port");
data_dir = $(cfgstr "$WORK/vault/data");
region = "local";
log_level = "info";
cache_size = "16M";
workers = 4;
shutdown_grace = "2s";
tls = {
  cert = $(cfgstr "$WORK/certs/vault.pem");
  key = $(cfgstr "$WORK/certs/vault.key");
  client_ca = $(cfgstr "$WORK/ca/ca.pem");
};
EOF
show coffer-vault --config vault/vault.conf "2>vault/vault.log" "&"
# pdeathsig: if this script is killed outright (no EXIT trap runs), the
# kernel still stops the vault it started.
setpriv --pdeathsig TERM -- "$VAULT_BIN" --config "$WORK/vault/vault.conf" \
    >"$WORK/vault/vault.log" 2>&1 &
VAULT_PID=$!
echo "$VAULT_PID" >vault/vault.pid
deadline=$(($(now_ms) + 30000))
while [ ! -s vault/port ]; do
    vault_running || die "coffer-vault stopped at start (see vault/vault.log)"
    [ "$(now_ms)" -lt "$deadline" ] || die "coffer-vault wrote no port in 30 s"
    sleep 0.1
done
PORT=$(head -n 1 vault/port)
[[ $PORT =~ ^[0-9]+$ ]] || die "vault/port holds \"$PORT\", not a port"
ADDR=127.0.0.1:$PORT
say "    listening on $ADDR (pid $VAULT_PID), log in vault/vault.log"

cat >ops.conf <<EOF
# coffer-admin --connect file: the operator's credentials for this vault.
vaults = [ "$ADDR" ];
tls = { cert = "certs/operator.pem"; key = "certs/operator.key"; ca = "ca/ca.pem"; };
EOF
step "Registering tenant \"$TENANT\" on the vault (operator certificate)"
run tenant-add "$ADMIN_BIN" tenant add "$TENANT" --reason quickstart \
    --connect ops.conf
say "    $(head -n 1 logs/tenant-add.log)"

# ---- the agent -------------------------------------------------------------

step "Setting up coffer-agent (agent/) and its keys"
cat >agent/agent.conf <<EOF
# Written by scripts/quickstart.sh.
tenant = "$TENANT";
key_file = $(cfgstr "$WORK/agent/view.key");
passphrase_file = $(cfgstr "$WORK/agent/view.pass");
state_dir = $(cfgstr "$WORK/agent/state");
lock_file = $(cfgstr "$WORK/agent/agent.lock");
log_level = "warn";
mailboxes = ( { name = $(cfgstr "$MAILBOX"); root = $(cfgstr "$MAILDIR"); } );
vaults = ( { address = "$ADDR"; name = "local"; region = "local"; } );
# One local vault is one region: fine for a try-out, never for real
# backups, which must be kept in two regions (docs/AGENT.md). The region
# is still checked against what the vault says at every run.
allow_single_region = true;
tls = {
  ca = $(cfgstr "$WORK/ca/ca.pem");
  cert = $(cfgstr "$WORK/certs/agent.pem");
  key = $(cfgstr "$WORK/certs/agent.key");
};
EOF
# The escrow passphrase guards the full keyring, the only key that opens
# the backups; a person would choose it and keep it off the mail host.
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >restore/escrow.pass
echo >>restore/escrow.pass
chmod 600 restore/escrow.pass
run agent-init "$AGENT_BIN" init --config agent/agent.conf \
    --escrow restore/escrow.key --escrow-passphrase-file restore/escrow.pass
say "    agent/view.key: the agent's write-only key view (passphrase in agent/view.pass)"
say "    restore/escrow.key: the full keyring; its escrow passphrase was generated"
say "      into restore/escrow.pass (mode 0600). On real hosts both leave the"
say "      mail host: the escrow copy goes to the restore host and a safe place."

# ---- backup ----------------------------------------------------------------

step "Backing up the mailbox"
show coffer-agent backup --config agent/agent.conf --json ">agent/backup.json"
t0=$(now_ms)
rc=0
"$AGENT_BIN" backup --config agent/agent.conf --json >agent/backup.json \
    2>logs/backup.log || rc=$?
BACKUP_MS=$(($(now_ms) - t0))
if [ "$rc" -ne 0 ]; then
    tail -n 20 logs/backup.log | sed 's/^/    /' >&2
    case $rc in
    6) why="some files could not be read (permissions?); see agent/backup.json" ;;
    *) why="see agent/backup.json and logs/backup.log (docs/AGENT.md, exit codes)" ;;
    esac
    die "coffer-agent backup exited $rc: $why"
fi
read -r B_FILES B_BYTES B_SENT B_CHUNKS B_NEW B_SNAP < <(python3 - agent/backup.json <<'EOF'
import json, sys
# Names are bytes, and the JSON carries them as they are (not always UTF-8).
d = json.load(open(sys.argv[1], encoding="utf-8", errors="surrogateescape"))
m = d["mailboxes"][0]
print(m["files"]["in_snapshot"], m["bytes"]["in_snapshot"], m["bytes"]["sent"],
      m["chunks"]["cut"], m["chunks"]["new"], m["snapshot"])
EOF
) || die "agent/backup.json does not read as expected"
say "    $B_FILES files, $(human "$B_BYTES") in $(secs "$BACKUP_MS") s;" \
    "$B_CHUNKS chunks, $B_NEW new; $(human "$B_SENT") sealed and sent"
say "    snapshot ${B_SNAP:0:16}"

# ---- restore ---------------------------------------------------------------

step "Restoring it with coffer-restore into restored/"
cat >restore/restore.conf <<EOF
# Written by scripts/quickstart.sh. On a real restore host the escrow key
# and its passphrase file live here, and nowhere on the mail host.
tenant = "$TENANT";
key_file = $(cfgstr "$WORK/restore/escrow.key");
passphrase_file = $(cfgstr "$WORK/restore/escrow.pass");
vaults = [ "$ADDR" ];
tls = {
  ca = $(cfgstr "$WORK/ca/ca.pem");
  cert = $(cfgstr "$WORK/certs/restore.pem");
  key = $(cfgstr "$WORK/certs/restore.key");
};
log_level = "warn";
EOF
show coffer-restore --config restore/restore.conf restore --mailbox "$MAILBOX" \
    --to restored --json ">restore/restore.json"
t0=$(now_ms)
rc=0
"$RESTORE_BIN" --config restore/restore.conf restore --mailbox "$MAILBOX" \
    --to restored --json >restore/restore.json 2>logs/restore.log || rc=$?
RESTORE_MS=$(($(now_ms) - t0))
if [ "$rc" -ne 0 ]; then
    cat restore/restore.json logs/restore.log 2>/dev/null | tail -n 20 |
        sed 's/^/    /' >&2
    die "coffer-restore exited $rc (docs/RESTORE.md, exit codes)"
fi
read -r R_FILES R_BYTES R_SNAP < <(python3 - restore/restore.json <<'EOF'
import json, sys
# Names are bytes, and the JSON carries them as they are (not always UTF-8).
d = json.load(open(sys.argv[1], encoding="utf-8", errors="surrogateescape"))
print(d["files"], d["bytes"], d["snapshot"])
EOF
) || die "restore/restore.json does not read as expected"
say "    $R_FILES files, $(human "$R_BYTES") in $(secs "$RESTORE_MS") s"
[ "$R_SNAP" = "$B_SNAP" ] ||
    die "restored snapshot $R_SNAP is not the one backed up ($B_SNAP)"

# ---- comparison ------------------------------------------------------------

step "Comparing restored/ with the original, byte for byte"
say "    (an inline python3 script walks both trees)"
COMPARE_OUT=$WORK/logs/compare.log
rc=0
python3 - "$MAILDIR" "$WORK/restored" >"$COMPARE_OUT" 2>&1 <<'EOF' || rc=$?
# Every regular file the agent backs up must come back with the same
# relative path (so the same flags in a message's name), the same bytes,
# mtime to the nanosecond and permission bits, and nothing else may appear.
# The agent leaves out, by design (agent/scan.h): tmp/ of the Maildir and
# of each top-level .Folder (deliveries being written), symbolic links,
# and fifos, sockets and devices. Directories are not compared: restore
# makes cur/, new/ and tmp/ for every folder.
import os, stat, sys

src, dst = (os.fsencode(a) for a in sys.argv[1:3])

def walk(top, skip_tmp):
    files, skipped = {}, {"tmp": 0, "symlink": 0, "special": 0}
    def visit(rel, depth_folder):
        full = os.path.join(top, rel) if rel else top
        with os.scandir(full) as it:
            for e in it:
                r = os.path.join(rel, e.name) if rel else e.name
                st = e.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    skipped["symlink"] += 1
                elif stat.S_ISDIR(st.st_mode):
                    # tmp/ at the root or in a top-level .Folder
                    if skip_tmp and e.name == b"tmp" and depth_folder:
                        skipped["tmp"] += sum(len(f) for _, _, f in
                                              os.walk(e.path))
                        continue
                    visit(r, rel == b"" and e.name.startswith(b"."))
                elif stat.S_ISREG(st.st_mode):
                    if skip_tmp and e.name == b"tmp" and depth_folder:
                        skipped["tmp"] += 1
                        continue
                    files[r] = st
                else:
                    skipped["special"] += 1
    visit(b"", True)
    return files, skipped

def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True

sf, sskip = walk(src, True)
df, dskip = walk(dst, False)
problems = []
for r in sorted(set(sf) - set(df)):
    problems.append("missing from the restore: %r" % r)
for r in sorted(set(df) - set(sf)):
    problems.append("not in the original: %r" % r)
for k, v in dskip.items():
    if v:
        problems.append("restore holds %d %s entries" % (v, k))
nbytes = 0
for r in sorted(set(sf) & set(df)):
    a, b = sf[r], df[r]
    nbytes += a.st_size
    if a.st_size != b.st_size:
        problems.append("size differs: %r (%d, %d)" % (r, a.st_size, b.st_size))
    elif a.st_mtime_ns != b.st_mtime_ns:
        problems.append("mtime differs: %r (%d, %d)" %
                        (r, a.st_mtime_ns, b.st_mtime_ns))
    elif (a.st_mode & 0o777 or 0o600) != b.st_mode & 0o777:
        # restore gives a file recorded without any permission bit 0600.
        problems.append("mode differs: %r (%o, %o)" %
                        (r, a.st_mode & 0o777, b.st_mode & 0o777))
    elif not same_bytes(os.path.join(src, r), os.path.join(dst, r)):
        problems.append("content differs: %r" % r)
print("files %d bytes %d skipped_tmp %d skipped_symlink %d skipped_special %d"
      % (len(sf), nbytes, sskip["tmp"], sskip["symlink"], sskip["special"]))
for p in problems[:50]:
    print(p)
if len(problems) > 50:
    print("... and %d more" % (len(problems) - 50))
sys.exit(1 if problems else 0)
EOF
if ! head -n 1 "$COMPARE_OUT" | grep -q '^files [0-9]'; then
    tail -n 5 "$COMPARE_OUT" | sed 's/^/    /' >&2
    die "the comparison could not run (logs/compare.log)"
fi
read -r _ C_FILES _ C_BYTES _ C_TMP _ C_LINKS _ C_SPECIAL <"$COMPARE_OUT"
if [ "$rc" -ne 0 ]; then
    sed -n '2,21p' "$COMPARE_OUT" | sed 's/^/    /' >&2
    die "the restored copy differs from $MAILDIR (all of it: logs/compare.log)"
fi
if [ "$C_FILES" != "$B_FILES" ] || [ "$C_FILES" != "$R_FILES" ]; then
    die "file counts disagree: original $C_FILES, backed up $B_FILES," \
        "restored $R_FILES"
fi
COMPARED="identical: $C_FILES files, $(human "$C_BYTES"): paths (flags included), bytes, mtimes (ns), permissions"
say "    $COMPARED"
left_out=""
[ "$C_TMP" = 0 ] || left_out+=" $C_TMP in tmp/ (deliveries in progress);"
[ "$C_LINKS" = 0 ] || left_out+=" $C_LINKS symbolic links;"
[ "$C_SPECIAL" = 0 ] || left_out+=" $C_SPECIAL fifos/sockets/devices;"
if [ -n "$left_out" ]; then
    say "    not backed up, by design:${left_out%;}"
fi

# ---- report ----------------------------------------------------------------

STEP="stopping the vault"
stop_vault
# SIGTERM is a clean stop, exit 0 (docs/VAULT.md); anything else is a fault.
if [ "${VAULT_EXIT:-0}" != 0 ]; then
    tail -n 15 vault/vault.log | sed 's/^/    /' >&2
    die "coffer-vault exited $VAULT_EXIT when stopped, not 0 (vault/vault.log)"
fi

{
    printf 'Coffer quick start: backup and restore verified.\n\n'
    printf '  mailbox     "%s" from %s (only read)\n' "$MAILBOX" "$MAILDIR"
    printf '  backed up   %s files, %s in %s s (%s new chunks, %s sent to the vault)\n' \
        "$B_FILES" "$(human "$B_BYTES")" "$(secs "$BACKUP_MS")" "$B_NEW" "$(human "$B_SENT")"
    printf '  restored    %s files, %s in %s s into restored/\n' \
        "$R_FILES" "$(human "$R_BYTES")" "$(secs "$RESTORE_MS")"
    printf '  compared    %s\n' "$COMPARED"
    if [ -n "$left_out" ]; then
        printf '              not backed up, by design:%s\n' "${left_out%;}"
    fi
    printf '\nEverything is in %s:\n' "$WORK"
    printf '  ca/                  the CA (ca.key signs every certificate: keep it safe)\n'
    printf '  certs/               vault, agent, restore and operator certificates and keys\n'
    printf '  vault/               vault.conf, vault.log, data/ (the stored, encrypted backup)\n'
    printf '  ops.conf             coffer-admin --connect file (operator)\n'
    printf '  agent/               agent.conf, view.key + view.pass, state/, backup.json\n'
    printf '  restore/             restore.conf, escrow.key (full keyring) + escrow.pass (0600)\n'
    [ ! -d sample ] || printf '  sample/              the generated Maildir\n'
    printf '  restored/            the restored mailbox\n'
    printf '  logs/                every command'"'"'s output; report.txt: this report\n'
    printf '\nThe vault is stopped. To use it again (Ctrl-C stops it):\n'
    printf '  cd %q && %q --config vault/vault.conf\n' "$WORK" "$VAULT_BIN"
    printf '  (it listens on a new port: update vaults in agent/agent.conf,\n'
    printf '  restore/restore.conf and ops.conf from vault/port)\n'
    printf 'To clean up: rm -rf %q  (or run the quick start again: it replaces it)\n' "$WORK"
} | tee report.txt | sed '1s/^/\n/'

if [ "${COFFER_QUICKSTART_CLEANUP:-0}" = 1 ]; then
    cd /
    for o in "${OWNED[@]}"; do
        rm -rf -- "${WORK:?}/$o"
    done
    rmdir -- "$WORK" 2>/dev/null || true
    say "(COFFER_QUICKSTART_CLEANUP=1: removed $WORK)"
fi
