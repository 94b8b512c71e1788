#!/usr/bin/env bash
# killsync_test.sh - kill -9 in the middle of a sync. vault-a and vault-b
# hold a backup of a bigger mailbox; vault-c starts empty with
# sync.bandwidth 512K, so seeding it takes a while. As soon as its stats
# show bytes pulled and it still lacks the snapshot, it is killed with
# SIGKILL; restarted (bandwidth unlimited), it converges: the same
# snapshot, and a store equal to vault-a's object by object.
set -euo pipefail
# shellcheck source=netns-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"

# The links get their delay once the backup is in (a backup of this
# size over 100-300 ms round trips takes minutes: gRPC's flow-control
# window, not the link, is the limit); no loss, so that the data moves
# at a rate the test can time.
# vault-c only joins later: started and registered on a and b now.
CL_START="vault-a vault-b" cl_cluster killsync later
CL_VAULTS_ALL=("${CL_VAULTS[@]}")
CL_VAULTS=(vault-a vault-b)
cl_tenant_add --region r1 --region r2 --region r3
root=$(cl_maildir big 300)
CL_MAILBOXES=("big=$root")
cl_agent_setup 2 vault-a vault-b
cl_backup backup || nl_fail "backup exited $? (logs/backup.log)"
CL_VAULTS=("${CL_VAULTS_ALL[@]}")
want=$(cl_snapshot_ids vault-a) || nl_fail "snapshots of vault-a"
cl_delays
nl_say "backup on vault-a and vault-b: $(du -sh "$root" | cut -f1) Maildir"

CL_SYNC_BANDWIDTH=512K
# Per call: a throttled SyncGet stream of a full batch must fit in it.
CL_SYNC_TIMEOUT=60s
cl_vault_config vault-c
cl_vault_start vault-c
CL_VAULTS=(vault-c)
cl_tenant_add --region r1 --region r2 --region r3
CL_VAULTS=("${CL_VAULTS_ALL[@]}")
cl_sync_now

# Mid-sync: objects are arriving (vault-c's store past 2 MB: the stats
# counters only move when a round ends) and the snapshot is not
# committed yet.
mid_sync() {
    local size
    size=$(du -sb "$NL_DIR/vault-c/data" 2>/dev/null | cut -f1)
    [ "${size:-0}" -gt 2000000 ] && [ -z "$(cl_snapshot_ids vault-c)" ]
}
nl_wait_until 60 "vault-c pulling (store > 2 MB, no snapshot yet)" mid_sync
size=$(du -sb "$NL_DIR/vault-c/data" | cut -f1)
cl_vault_stop vault-c KILL
nl_say "killed vault-c (SIGKILL) mid-sync, its store at $size bytes"
restart_line=$(wc -l <"$NL_DIR/vault-c/vault.log")

CL_SYNC_BANDWIDTH=0
CL_SYNC_TIMEOUT=5s
cl_vault_config vault-c
cl_vault_start vault-c
cl_sync_now
has_all() {
    local got
    got=$(cl_snapshot_ids vault-c) || return 1
    [ "$got" = "$want" ]
}
nl_wait_until 120 "vault-c lists vault-a's snapshot after the restart" has_all
nl_say "vault-c converged after the restart"
# It was mid-sync: after the restart it still had a snapshot to pull.
tail -n "+$restart_line" "$NL_DIR/vault-c/vault.log" |
    grep -q 'vault.sync.round .*pulled=1 objects=[1-9]' ||
    nl_fail "vault-c pulled no snapshot after the restart: the kill was not mid-sync"
cl_wait_rounds 60 vault-c
for v in vault-a vault-c; do
    cl_vault_stop "$v"
    cl_store_dump "$v" "$NL_DIR/$v.dump"
done
diff "$NL_DIR/vault-a.dump" "$NL_DIR/vault-c.dump" >"$NL_DIR/logs/dump.diff" ||
    nl_fail "vault-c's store differs from vault-a's: $(head -n 4 "$NL_DIR/logs/dump.diff")"
nl_say "PASS: store identical to vault-a's: $(grep -c '^O ' "$NL_DIR/vault-c.dump") objects"
