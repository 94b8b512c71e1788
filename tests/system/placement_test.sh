#!/usr/bin/env bash
# placement_test.sh - a tenant pinned to regions r1 and r2 never lands on
# vault-c (region r3), though vault-c is a peer of both and has the
# tenant registered: after sync rounds it holds none of the tenant's
# snapshots or objects, and an agent pointed at vault-c alone is refused
# (while one using vault-a and vault-b backs up).
set -euo pipefail
# shellcheck source=netns-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"

cl_cluster placement "loss 1%"
cl_tenant_add --region r1 --region r2
root=$(cl_maildir box 20)
CL_MAILBOXES=("box=$root")

cl_agent_setup 2 vault-a vault-b
cl_backup backup-ab || nl_fail "backup to vault-a and vault-b exited $? (logs/backup-ab.log)"
want=$(cl_snapshot_ids vault-a) || nl_fail "snapshots of vault-a"
[ -n "$want" ] || nl_fail "vault-a lists no snapshot"

# An agent for vault-c alone (single region allowed explicitly, so the
# agent's own placement check does not stop it first): the vault refuses.
sed -i 's/^vaults = .*/vaults = ( { address = "'"$(cl_addr vault-c)"'"; name = "vault-c"; region = "r3"; } );\nallow_single_region = true;/' \
    "$NL_DIR/agent/agent.conf"
sed -i 's/^quorum = .*/quorum = 1;/' "$NL_DIR/agent/agent.conf"
rc=0
cl_backup backup-c || rc=$?
if [ "$rc" = 0 ] || [ "$rc" = 5 ]; then
    nl_fail "an agent pointed at vault-c (outside the tenant's regions) was not refused: exit $rc"
fi
grep -qi 'region' "$NL_DIR/logs/backup-c.log" "$NL_DIR/logs/backup-c.json" ||
    nl_fail "the refusal does not mention the region (logs/backup-c.log)"
nl_say "agent pointed at vault-c refused (exit $rc): $(grep -io '[^"]*not allowed in region[^"]*' "$NL_DIR/logs/backup-c.log" | head -n 1)"

cl_sync_now
cl_wait_rounds 60 vault-a vault-b
# vault-c skips the tenant; give it the same time for rounds of its own.
cl_sync_now
cl_wait_rounds 60 vault-a vault-b
grep -q 'method=/coffer.v1.Vault/OpenLease status=FAILED_PRECONDITION tenant=acme' \
    "$NL_DIR/vault-c/vault.log" || nl_fail "vault-c did not refuse the agent's lease"
! grep -q 'method=/coffer.v1.Vault/Sync[A-Za-z]* status=OK .*tenant=acme' \
    "$NL_DIR/vault-c/vault.log" || nl_fail "vault-c served a Sync call for acme"
for v in vault-a vault-b; do
    ! grep -q "^coffer_vault_sync_[a-z_]*{tenant=\"acme\",peer=\"vault-c\"}" \
        "$NL_DIR/$v/vault.prom" || nl_fail "$v syncs acme with vault-c (outside its regions)"
done
cl_vault_stop vault-c
if [ -d "$NL_DIR/vault-c/data/$CL_TENANT" ]; then
    cl_store_dump vault-c "$NL_DIR/vault-c.dump"
    n=$(grep -c '^[SO] ' "$NL_DIR/vault-c.dump" || true)
    [ "$n" = 0 ] || nl_fail "vault-c holds $n snapshots/objects of $CL_TENANT"
fi
nl_say "PASS: vault-c holds nothing of $CL_TENANT; agent refused there"
