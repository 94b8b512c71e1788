#!/usr/bin/env bash
# converge_test.sh - three vaults in three regions on links of 50, 100 and
# 150 ms with 1% loss (when tc netem exists); vault-c is cut off while the
# agent backs up twice with quorum 2 (both runs succeed on a and b); once
# healed, within a bounded time all three list the same snapshots, a
# restore from vault-c alone is byte-exact, and, the vaults stopped, their
# stores hold the same snapshots, tombstones and objects by ID and
# checksum (store_dump).
set -euo pipefail
# shellcheck source=netns-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"

cl_cluster converge "loss 1%"
cl_tenant_add --region r1 --region r2 --region r3
nl_say "3 vaults up, tenant $CL_TENANT registered in r1 r2 r3"

root=$(cl_maildir box 40)
CL_MAILBOXES=("box=$root")
cl_agent_setup 2 vault-a vault-b vault-c

nl_cut vault-c
for run in 1 2; do
    rc=0
    cl_backup "backup$run" || rc=$?
    # 5 = partial: committed by the quorum, a vault missed it (vault-c).
    [ "$rc" = 0 ] || [ "$rc" = 5 ] ||
        nl_fail "backup $run with vault-c cut off exited $rc (logs/backup$run.log)"
    nl_say "backup $run with vault-c cut off: exit $rc"
    if [ "$run" = 1 ]; then
        "$COFFER_GEN_CORPUS_BIN" --evolve 6 --seed 7 --quiet "$NL_DIR/mail-box" \
            >"$NL_DIR/logs/evolve.log" 2>&1 || nl_fail "gen_corpus --evolve"
    fi
done
a=$(cl_snapshot_ids vault-a) || nl_fail "snapshots of vault-a"
[ "$(wc -l <<<"$a")" = 2 ] || nl_fail "vault-a lists $(wc -l <<<"$a") snapshots, not 2"

nl_heal vault-c
cl_sync_now
t0=$(nl_now_ms)
nl_wait_until 120 "all three vaults list the same 2 snapshots" cl_same_snapshots
[ "$CL_SNAPS" = "$a" ] || nl_fail "converged on other snapshots than vault-a's"
nl_say "converged (snapshot lists) in $((($(nl_now_ms) - t0) / 1000)) s after heal"

# The operator's view agrees: every vault's last round with each peer
# succeeded with nothing behind (coffer-admin replication status).
nl_wait_until 60 "replication status: every peer in sync" cl_status_converged
nl_say "replication status: 6 peer lines in sync, none behind"

# A restore from vault-c alone (it got everything by sync) is exact.
conf=$(cl_restore_conf c-only vault-c)
cl_run restore-c "$COFFER_RESTORE_BIN" --config "$conf" restore --mailbox box \
    --to "$NL_DIR/restored-c" --json
diff -r -x tmp "$root" "$NL_DIR/restored-c" >"$NL_DIR/logs/diff.log" 2>&1 ||
    nl_fail "restore from vault-c differs: $(head -n 5 "$NL_DIR/logs/diff.log")"
nl_say "restore from vault-c alone: byte-exact"

# Same stores, object by object: stop and list each.
for v in "${CL_VAULTS[@]}"; do
    cl_vault_stop "$v"
    cl_store_dump "$v" "$NL_DIR/$v.dump"
done
n_obj=$(grep -c '^O ' "$NL_DIR/vault-a.dump" || true)
n_snap=$(grep -c '^S ' "$NL_DIR/vault-a.dump" || true)
[ "$n_snap" = 2 ] || nl_fail "vault-a's store holds $n_snap snapshots, not 2"
[ "$n_obj" -gt 100 ] || nl_fail "vault-a's store holds only $n_obj objects"
for v in vault-b vault-c; do
    if ! diff "$NL_DIR/vault-a.dump" "$NL_DIR/$v.dump" >"$NL_DIR/logs/dump-$v.diff"; then
        nl_fail "$v's store differs from vault-a's ($(grep -c '^[<>]' \
            "$NL_DIR/logs/dump-$v.diff") lines): $(head -n 4 "$NL_DIR/logs/dump-$v.diff")"
    fi
done
nl_say "PASS: stores identical: $n_snap snapshots, $n_obj objects (ID + checksum)"
