#!/usr/bin/env bash
# deletions_test.sh - deletions travel and nothing comes back. Three
# vaults (test mode, no scheduled retention); two mailboxes backed up
# twice everywhere. With vault-c cut off, every clock moved 2 days on,
# vault-a alone runs retention (the tenant's window is 1 day: each
# mailbox's first snapshot goes) and a two-person purge of mailbox
# "gone". vault-b follows vault-a; once
# vault-c is healed it drops them too, and after further full sync rounds
# no vault lists any of them again; every store keeps their tombstones.
set -euo pipefail
# shellcheck source=netns-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"

# Delay and loss once the backups are in: over 100-300 ms round trips
# with 1% loss they take a minute, and this test is about what follows.
# No scheduled retention: only vault-a's explicit run may drop anything,
# so whatever the others drop came to them as tombstones.
cl_cluster deletions later 'retention = { schedule = "0"; };' --test-mode
cl_tenant_add --region r1 --region r2 --region r3 --retention 1d

keep=$(cl_maildir keep 30)
gone=$(cl_maildir gone 20)
CL_MAILBOXES=("keep=$keep" "gone=$gone")
cl_agent_setup 3 vault-a vault-b vault-c
cl_backup backup1 || nl_fail "backup 1 exited $? (logs/backup1.log)"
"$COFFER_GEN_CORPUS_BIN" --evolve 6 --seed 11 --quiet "$NL_DIR/mail-keep" \
    >"$NL_DIR/logs/evolve-keep.log" 2>&1 || nl_fail "gen_corpus --evolve keep"
"$COFFER_GEN_CORPUS_BIN" --evolve 6 --seed 12 --quiet "$NL_DIR/mail-gone" \
    >"$NL_DIR/logs/evolve-gone.log" 2>&1 || nl_fail "gen_corpus --evolve gone"
cl_backup backup2 || nl_fail "backup 2 exited $? (logs/backup2.log)"
before=$(cl_snapshot_ids vault-a) || nl_fail "snapshots of vault-a"
keep_before=$(cl_snapshot_ids vault-a keep)
gone_before=$(cl_snapshot_ids vault-a gone)
if [ "$(wc -l <<<"$keep_before")" != 2 ] || [ "$(wc -l <<<"$gone_before")" != 2 ]; then
    nl_fail "expected 2 snapshots per mailbox on vault-a: $before"
fi
nl_wait_until 60 "the three vaults list the same 4 snapshots" cl_same_snapshots
cl_delays "loss 1%"
nl_say "4 snapshots on every vault"

nl_cut vault-c
# Every vault's clock 2 days on (vault-c's too, while it is cut off: peers
# whose clocks differ by more than a day refuse to sync): each mailbox's
# first snapshot was superseded more than the 1-day window ago.
for v in "${CL_VAULTS[@]}"; do
    cl_vault_stop "$v"
    cl_vault_start "$v" --test-mode --test-clock-offset 2d
done
conf_a=$(cl_restore_conf a-admin vault-a)
cl_run retention "$COFFER_RESTORE_BIN" --config "$conf_a" retention --json
nl_say "retention on vault-a: $(grep '^{' "$NL_DIR/logs/retention.log" | grep -o '"snapshots_removed":[0-9]*')"
keep_after=$(cl_snapshot_ids vault-a keep)
[ "$(wc -l <<<"$keep_after")" = 1 ] ||
    nl_fail "retention left $(wc -l <<<"$keep_after") snapshots of keep on vault-a, not 1"

# Purge of "gone" on vault-a only, with a second admin's approval.
rc=0
nl_exec cl "$COFFER_RESTORE_BIN" --config "$conf_a" purge --mailbox gone \
    --reason "system test" --vault "$(cl_addr vault-a)" \
    >"$NL_DIR/logs/purge1.log" 2>&1 || rc=$?
[ "$rc" = 9 ] || nl_fail "purge without approval exited $rc, not 9 (logs/purge1.log)"
appr=$(grep -o 'approval_id=[0-9a-f]*' "$NL_DIR/logs/purge1.log" | head -n 1 | cut -d= -f2)
[ -n "$appr" ] || nl_fail "no approval_id in logs/purge1.log"
conf_a2=$(CL_ADMIN_STEM=admin2 cl_restore_conf a-admin2 vault-a)
cl_run approve "$COFFER_RESTORE_BIN" --config "$conf_a2" approve \
    --vault "$(cl_addr vault-a)" --approval "$appr"
cl_run purge2 "$COFFER_RESTORE_BIN" --config "$conf_a" purge --mailbox gone \
    --reason "system test" --vault "$(cl_addr vault-a)" \
    --approval "$(cl_addr vault-a)=$appr"
[ -z "$(cl_snapshot_ids vault-a gone)" ] || nl_fail "vault-a still lists gone"
after=$(cl_snapshot_ids vault-a)
dropped=$(comm -23 <(echo "$before") <(echo "$after"))
[ "$(wc -l <<<"$dropped")" = 3 ] ||
    nl_fail "vault-a dropped $(wc -l <<<"$dropped") snapshots, not 3 (each mailbox's first by retention, the rest of gone by purge)"
nl_say "vault-a: 3 snapshots dropped by retention and purge; 1 left"

same_as_a() {
    local got
    got=$(cl_snapshot_ids "$1") || return 1
    [ "$got" = "$after" ]
}
cl_sync_now
nl_wait_until 60 "vault-b follows vault-a's deletions" same_as_a vault-b
grep -q 'vault.sync.round .*tombstones=[1-9]' "$NL_DIR/vault-b/vault.log" ||
    nl_fail "vault-b logged no sync round applying tombstones"
nl_say "vault-b dropped them too (tombstones pulled from vault-a)"

nl_heal vault-c
cl_sync_now
nl_wait_until 90 "vault-c drops what vault-a dropped" same_as_a vault-c
grep -q 'vault.sync.round .*tombstones=[1-9]' "$NL_DIR/vault-c/vault.log" ||
    nl_fail "vault-c logged no sync round applying tombstones"
nl_say "vault-c dropped them after the heal"
# Several full rounds in every direction: nothing may come back.
cl_wait_rounds 60 vault-a vault-b vault-c
cl_sync_now
cl_wait_rounds 60 vault-a vault-b vault-c
for v in "${CL_VAULTS[@]}"; do
    got=$(cl_snapshot_ids "$v") || nl_fail "snapshots of $v"
    [ "$got" = "$after" ] || nl_fail "$v lists $(wc -l <<<"$got") snapshots after further rounds: $got (want $after)"
done
[ -z "$(cl_snapshot_ids vault-c gone)" ] || nl_fail "vault-c lists gone again"

for v in "${CL_VAULTS[@]}"; do
    cl_vault_stop "$v"
    cl_store_dump "$v" "$NL_DIR/$v.dump"
    for id in $dropped; do
        grep -q "^S $id " "$NL_DIR/$v.dump" && nl_fail "$v's store still holds snapshot $id"
        grep -q "^T $id\$" "$NL_DIR/$v.dump" || nl_fail "$v keeps no tombstone for $id"
    done
done
nl_say "PASS: 3 deletions on every replica, tombstones kept, nothing resurrected"
