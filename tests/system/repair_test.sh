#!/usr/bin/env bash
# repair_test.sh - a flipped byte is repaired from a peer. Three vaults
# hold a backup; vault-b is stopped and one byte of its largest stored
# object is flipped inside its RocksDB blob file. A restore reading from
# vault-b alone trips over it (the read fails its checksum, which queues
# a repair); vault-b fetches a good copy from a peer, checks it and
# replaces it (repairs counter 1, vault.repair logged); a second restore
# from vault-b alone is byte-exact, and vault-b's store equals vault-a's
# again.
set -euo pipefail
# shellcheck source=netns-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"

# Delay and loss once the backups are in: over 100-300 ms round trips
# with 1% loss they take a minute, and this test is about what follows.
cl_cluster repair later
cl_tenant_add --region r1 --region r2 --region r3
root=$(cl_maildir box 40)
CL_MAILBOXES=("box=$root")
cl_agent_setup 3 vault-a vault-b vault-c
cl_backup backup || nl_fail "backup exited $? (logs/backup.log)"
cl_delays "loss 1%"

cl_vault_stop vault-a
cl_store_dump vault-a "$NL_DIR/vault-a.dump"
cl_vault_start vault-a
cl_vault_stop vault-b
cl_store_dump vault-b "$NL_DIR/vault-b.before"
cmp -s "$NL_DIR/vault-a.dump" "$NL_DIR/vault-b.before" ||
    nl_fail "vault-a and vault-b differ before any damage"
# The largest object: large enough to sit in a blob file.
read -r _ id sum len < <(grep '^O ' "$NL_DIR/vault-b.before" | sort -k4,4n | tail -n 1)
[ "${len:-0}" -ge 4096 ] || nl_fail "largest object is ${len:-0} bytes (< 4 KiB, not in a blob file)"
nl_say "damaging object ${id:0:16} ($len bytes) on vault-b: $(cl_damage_object vault-b "$id")"
cl_vault_start vault-b

# First restore from vault-b alone: the damaged object cannot be served.
conf=$(cl_restore_conf b-only vault-b)
rc=0
nl_exec cl "$COFFER_RESTORE_BIN" --config "$conf" restore --mailbox box \
    --to "$NL_DIR/restored-1" --json >"$NL_DIR/logs/restore-1.json" \
    2>"$NL_DIR/logs/restore-1.log" || rc=$?
nl_say "restore from damaged vault-b alone: exit $rc"
[ "$rc" != 0 ] || ! diff -r -x tmp "$root" "$NL_DIR/restored-1" >/dev/null ||
    nl_say "(the restore did not need the damaged object)"

repaired() { [ "$(cl_stat vault-b '^coffer_vault_repairs_total')" -ge 1 ]; }
cl_sync_now
nl_wait_until 60 "vault-b repairs the object (coffer_vault_repairs_total >= 1)" repaired
grep -q 'vault.repair' "$NL_DIR/vault-b/vault.log" || nl_fail "vault-b logged no vault.repair"
nl_say "repaired: repairs=$(cl_stat vault-b '^coffer_vault_repairs_total'), failures=$(cl_stat vault-b '^coffer_vault_repair_failures_total')"
n=$(cl_status_field vault-b "" repairs) || nl_fail "no status line for vault-b"
[ "$n" = 1 ] || nl_fail "replication status shows repairs=$n on vault-b, not 1"
[ "$(cl_status_field vault-b "" last_repair_ms)" -gt 0 ] ||
    nl_fail "replication status shows no last repair time on vault-b"
nl_say "replication status: vault-b repairs=1"

conf=$(cl_restore_conf b-only vault-b)
cl_run restore-2 "$COFFER_RESTORE_BIN" --config "$conf" restore --mailbox box \
    --to "$NL_DIR/restored-2" --json
diff -r -x tmp "$root" "$NL_DIR/restored-2" >"$NL_DIR/logs/diff.log" 2>&1 ||
    nl_fail "restore from repaired vault-b differs: $(head -n 5 "$NL_DIR/logs/diff.log")"
nl_say "restore from vault-b alone after repair: byte-exact"

cl_vault_stop vault-b
cl_store_dump vault-b "$NL_DIR/vault-b.after"
grep -q "^O $id $sum $len\$" "$NL_DIR/vault-b.after" ||
    nl_fail "vault-b's object $id is not back to its checksum"
cmp -s "$NL_DIR/vault-a.dump" "$NL_DIR/vault-b.after" ||
    nl_fail "vault-b's store differs from vault-a's after the repair"
nl_say "PASS: object repaired from a peer; store identical to vault-a's"
